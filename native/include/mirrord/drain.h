/* SPDX-License-Identifier: MIT */
/*
 * Delivery of a ring's records to outputs, in the consumer's process: routes (session ->
 * fd, mode), drain modes, per-route and per-ring drain counters.  Not part of the ring
 * ABI (mirrord/ring.h): nothing here is in shared memory, and another consumer may deliver
 * its records however it likes.
 */
#ifndef MIRRORD_DRAIN_H
#define MIRRORD_DRAIN_H

#include "mirrord/ring.h"

/*
 * Drain up to budget records to their outputs, then release them.  Each record goes to
 * the route whose session_id matches the record's (a route with session_id 0 takes any),
 * through one write(2) per frame (TAP/TUN), sendmmsg(2) batches (bound AF_PACKET
 * sockets) or encapsulated sendmmsg(2) batches to remote collectors (encap.h).  A send that fails drops the copy and counts it by reason; nothing blocks.
 */
#define MR_DRAIN_WRITE 0       /* write(2) the whole L2 frame (TAP) */
#define MR_DRAIN_WRITE_L3 1    /* strip Ethernet and VLAN tags, write IPv4/IPv6 only (TUN) */
#define MR_DRAIN_SENDMMSG 2    /* sendmmsg(2) the whole frame (bound AF_PACKET socket) */
#define MR_DRAIN_ENCAP 3       /* encapsulate for remote collectors (encap.h: VXLAN, GENEVE, ERSPAN) */

struct mr_encap;

struct mr_route {
	uint32_t session_id;   /* 0: any session */
	int32_t fd;            /* the output; -1 while it is missing (copies count as no_output) */
	int32_t mode;          /* MR_DRAIN_* */
	struct mr_encap *encap; /* MR_DRAIN_ENCAP: the collectors and their sockets (fd: open or -1) */
};

/* Per route, accumulated across calls (the caller zeroes them once). */
struct mr_drain_stats {
	uint64_t pkts, bytes;        /* delivered */
	uint64_t drop_busy;          /* EAGAIN / EWOULDBLOCK / ENOBUFS */
	uint64_t drop_error;         /* any other send error (e.g. EIO: device down) */
	uint64_t drop_not_ip;        /* MR_DRAIN_WRITE_L3 and not IPv4/IPv6 */
	uint64_t drop_no_output;     /* fd < 0 */
	uint64_t truncated;          /* delivered copies flagged TRUNCATED */
	int32_t last_errno;
};

/* Per ring, accumulated across calls. */
struct mr_drain_totals {
	uint64_t records;            /* records taken from the ring (valid ones) */
	uint64_t unrouted;           /* no route for the record's session id: dropped */
	uint64_t corrupt;            /* corruption events (each reset the ring) */
};

/* Returns the entries processed, -EINVAL for an unknown route mode, or -ENXIO once the
 * ring's mapping is lost (mr_cons__lost(): its file was truncated): detach it. */
int mr_cons__drain(struct mr_cons *c, const struct mr_route *routes, struct mr_drain_stats *stats,
		   unsigned nroutes, unsigned budget, struct mr_drain_totals *totals);

/* Status over many rings and sessions, one call per ring: add n routes' counters into acc
 * (last_errno is not summed), and find the next route at or after i with a last_errno
 * (n if none). */
void mr_drain_stats__add(struct mr_drain_stats *acc, const struct mr_drain_stats *src, unsigned n);
unsigned mr_drain_stats__next_errno(const struct mr_drain_stats *s, unsigned i, unsigned n);

/* Offset of the L3 header in an Ethernet frame after any 802.1Q/802.1ad tags, and its
 * ethertype; -1 if the frame is too short. */
int mr_frame__l3_offset(const uint8_t *frame, uint32_t len, uint16_t *ethertype);

#endif /* MIRRORD_DRAIN_H */
