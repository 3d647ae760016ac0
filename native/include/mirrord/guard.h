/* SPDX-License-Identifier: MIT */
/*
 * SIGBUS guard (docs/ring-abi.md section 11).  A named ring file can be shrunk by anyone
 * who can write it; an access past its new end raises SIGBUS.  Every mapping of a ring
 * that is not sealed against shrinking is registered in a fixed table; on a SIGBUS inside
 * one, a process-wide handler replaces the whole mapping with anonymous zero pages, marks
 * the ring lost and returns, so the faulting access completes on the replacement.  Any
 * other SIGBUS goes to the handler installed before ours.
 *
 * mr_prod__create and mr_cons__attach guard the rings they map (mr_prod__lost /
 * mr_cons__lost in ring.h read the flag); this API is for embedders that map rings
 * themselves.  One guard per process: the table and the handler are the state of the
 * copy of guard.c linked into the caller (see native/build_xdp.py for why the forwarder's
 * module carries its own and how the two never meet).
 */
#ifndef MIRRORD_GUARD_H
#define MIRRORD_GUARD_H

#include <stddef.h>

/* Guard the mapping [addr, addr + len): a slot id (>= 0), or -ENOSPC when the table is
 * full, or -errno from sigaction.  Unguard before unmapping it. */
int mr_guard__add(void *addr, size_t len);
void mr_guard__remove(int slot);
/* 1 once the slot's mapping was replaced (one acquire load), else 0. */
int mr_guard__lost(int slot);

#endif /* MIRRORD_GUARD_H */
