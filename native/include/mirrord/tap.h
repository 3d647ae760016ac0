/* SPDX-License-Identifier: MIT */
/*
 * The embeddable mirror tap (libmirrord): what `mirrord forward` does to mirror a frame,
 * for any user-space dataplane to call from its own RX loop.  docs/embedding.md.
 *
 * One struct mr_tap per binding (an interface queue served by one packet thread), on one
 * mirror ring (ring.h: single producer, single consumer; the daemon drains it).  Per RX
 * burst, after the forwarding decision and before the RX buffers go back to the fill
 * ring, the packet thread calls mr_tap__offer_burst() once: it applies the binding's rule
 * (session, 1-in-N sampling with run length, truncation), gathers each sampled frame's
 * fragments into one ring record and publishes them with one submit.  It never blocks,
 * never allocates, never writes the caller's buffers; a copy that does not fit is dropped
 * and counted.  Every copy is accounted for:
 *
 *     sampled == pushed + dropped_ring_full + dropped_no_ring + dropped_ring_lost
 *
 * Threads: offer and offer_burst on the tap's packet thread only; set_rule, counters,
 * ring_fds, ring_path and ring_lost from any thread; destroy after the packet thread
 * stopped using the tap.  Functions return 0 or a negative errno.
 */
#ifndef MIRRORD_TAP_H
#define MIRRORD_TAP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct mr_tap;                      /* one per binding: one packet thread, one ring (SPSC) */

struct mr_tap_rule {                /* what the daemon's config says for this binding's ingress */
	uint32_t session_id;        /* 0: mirror nothing */
	uint32_t rate;              /* 0 or 1: every frame; N: 1 in N, counter k per tap, hit when k % N == 0 */
	uint32_t run_length;        /* after a hit, this many more frames too (Junos run-length) */
	uint32_t max_len;           /* truncate copies to this (0: whole frame, up to the ring's max frame) */
};

struct mr_tap_insn {                /* one classic BPF instruction: libpcap's struct bpf_insn */
	uint16_t code;
	uint8_t jt, jf;
	uint32_t k;
};
#define MR_TAP_MAX_INSNS 4096       /* BPF_MAXINSNS */

struct mr_tap_frag {                /* one buffer of a frame */
	const void *data;
	uint32_t len;
};

struct mr_tap_frame {               /* a frame: one fragment (nfrags 1) or a multi-buffer chain */
	const struct mr_tap_frag *frags;
	uint32_t nfrags;
};

struct mr_tap_counters {            /* named as in status and /metrics (mirror_*) */
	uint64_t seen;              /* frames offered, mirrored or not */
	uint64_t sampled;           /* frames chosen by the rule */
	uint64_t pushed;            /* copies in the ring */
	uint64_t dropped_ring_full; /* copies dropped: no room in the ring */
	uint64_t dropped_no_ring;   /* copies dropped: the tap has no ring (mr_tap__create_no_ring) */
	uint64_t dropped_ring_lost; /* copies dropped: the ring's file was truncated (and every
				     * copy of the burst in which that was seen) */
	uint64_t rule_generation;   /* rules set so far that the packet thread has taken up */
};

/* A tap on a new ring: ring_path NULL or "" makes an anonymous sealed memfd, otherwise a
 * file created under a temporary name and renamed into place (the tap owns it and removes
 * it in mr_tap__destroy).  data_size: a power of two (0: the default 4 MiB).  name: the
 * ring's label, seen by the daemon.  err gets one line naming the reason. */
int mr_tap__create(struct mr_tap **out, const char *ring_path, uint32_t data_size, const char *name,
		   char *err, size_t errlen);
/* A binding whose ring could not be made: it samples as any other and counts every copy
 * in dropped_no_ring. */
int mr_tap__create_no_ring(struct mr_tap **out);
/* After the packet thread stopped using it.  NULL is fine. */
void mr_tap__destroy(struct mr_tap *t);

/* Any thread.  A lock-free swap; returns once the packet thread can no longer be reading
 * the previous rule (a grace period of a few nanoseconds: the packet thread holds a rule
 * only while it copies it).  -EINVAL for a NULL rule, -ENOMEM. */
int mr_tap__set_rule(struct mr_tap *t, const struct mr_tap_rule *r);

/* The same with a capture filter: a classic BPF program (pcap_compile()'s bf_insns and
 * bf_len, linktype Ethernet), copied with the rule; insns NULL or n 0: no filter.  The
 * packet thread runs it (libpcap's bpf_filter()) on each frame BEFORE sampling, on the
 * whole frame (a multi-buffer one gathered, up to MR_FRAME_MAX bytes) as tcpdump -r would; a frame it rejects is counted
 * in mr_tap__filtered() and neither sampled nor counted by the rate.  -EINVAL: n over
 * MR_TAP_MAX_INSNS or a program bpf_validate() refuses. */
int mr_tap__set_rule_filter(struct mr_tap *t, const struct mr_tap_rule *r, const struct mr_tap_insn *insns,
			    uint32_t n);
/*
 * VLAN sub-interfaces (issue 17): a binding's table is a default rule plus rules per outer
 * VLAN ID.  A frame whose first tag (TPID 0x8100, or 0x88a8 for QinQ: the outer S-tag)
 * carries the VID of a rule goes to that rule; every other frame (untagged, priority-tagged
 * VID 0, or a VID without a rule) goes to the default rule: sub-interface first, then the
 * parent.  Per frame, in this order:
 *
 *     VLAN dispatch -> that rule's filter -> its sampling (rate, run_length) -> truncation
 *
 * A frame its rule's filter rejects is not mirrored, and does NOT fall back to the default
 * rule (as Junos: a frame belongs to its logical unit).  Each rule keeps its own sampling
 * counter k and its own counters (mr_tap__rule_counters), so a rate counts exactly per
 * (binding, session); k and the counters of a rule carry over a swap when the new table has
 * a rule with the same (vid, session_id).
 */
#define MR_TAP_MAX_VLAN_RULES 64       /* VID rules per table, beside the default rule */
#define MR_TAP_MAX_TABLE_INSNS 16384   /* filter instructions of all the rules of a table */

/* Rule flag: copy this session's frames only while the consumer says someone listens to its
 * output (the ring header's listened set, ring.h mr_prod__listened(), read once per burst).
 * Otherwise a sampled frame is not copied at all and counts as skipped_no_listener:
 *     sampled == pushed + dropped_ring_full + dropped_no_ring + dropped_ring_lost
 *                + skipped_no_listener */
#define MR_TAP_RULE_WHEN_LISTENED 0x1u

struct mr_tap_vlan_rule {           /* one rule of a table (mr_tap__set_rules) */
	uint32_t vid;               /* 0: the default rule; 1-4094: frames with this outer VID */
	uint32_t flags;             /* MR_TAP_RULE_* (other bits: -EINVAL) */
	struct mr_tap_rule rule;    /* session_id 0: frames of this VID are not mirrored */
	const struct mr_tap_insn *filter; /* NULL or filter_len 0: no filter */
	uint32_t filter_len;
};

struct mr_tap_rule_counters {       /* one rule in force: named as in status and /metrics */
	uint32_t vid, session_id;
	uint64_t seen;              /* frames dispatched to this rule */
	uint64_t filtered;          /* ... that its filter rejected */
	uint64_t sampled, pushed, dropped_ring_full, dropped_no_ring, dropped_ring_lost;
	uint64_t skipped_no_listener; /* sampled, not copied: nobody listens (MR_TAP_RULE_WHEN_LISTENED) */
};

/* Any thread: swap the whole table (the same lock-free swap as mr_tap__set_rule).  At most
 * one rule per vid; vid 0 (the default rule) may be left out (then: session 0).  -EINVAL:
 * a vid over 4094 or twice, flags not 0, more than MR_TAP_MAX_VLAN_RULES VID rules, a
 * filter over MR_TAP_MAX_INSNS, all filters over MR_TAP_MAX_TABLE_INSNS, or a program
 * bpf_validate() refuses.  mr_tap__set_rule() and mr_tap__set_rule_filter() set a table of
 * one default rule. */
int mr_tap__set_rules(struct mr_tap *t, const struct mr_tap_vlan_rule *rules, uint32_t n);
/* Any thread: the counters of the rules in force with a session (the packet thread took
 * up the table at its last burst), at most max of them into out; returns how many there
 * are (more than max: call again with room).  Each rule's counters are exact; a rule that
 * leaves the table takes its counters with it (the tap's totals keep them). */
int mr_tap__rule_counters(const struct mr_tap *t, struct mr_tap_rule_counters *out, uint32_t max);

/* Any thread: frames of a session that its filter rejected.  Beside the counters:
 *     seen == filtered + not sampled + sampled   (while a session is set) */
uint64_t mr_tap__filtered(const struct mr_tap *t);
/* Any thread: sampled frames not copied because nobody listened (MR_TAP_RULE_WHEN_LISTENED),
 * all rules.  Beside the counters:
 *     sampled == pushed + dropped_ring_full + dropped_no_ring + dropped_ring_lost + this */
uint64_t mr_tap__skipped_no_listener(const struct mr_tap *t);

/* Packet thread.  Offers n frames received on ifindex at ts_ns (any clock the consumer
 * understands; mirrord forward uses CLOCK_REALTIME); returns the copies pushed.  n == 0
 * only takes up a new rule.  At most one ring submit. */
unsigned mr_tap__offer_burst(struct mr_tap *t, const struct mr_tap_frame *frames, unsigned n,
			     uint32_t ifindex, uint64_t ts_ns);
/* The same for single-buffer frames, the common case. */
unsigned mr_tap__offer(struct mr_tap *t, const void *const *data, const uint32_t *len, unsigned n,
		       uint32_t ifindex, uint64_t ts_ns);

/* Any thread; relaxed loads of single-writer counters (each one is exact, a snapshot of
 * all of them may straddle a burst). */
void mr_tap__counters(const struct mr_tap *t, struct mr_tap_counters *c);
/* The ring's shm fd and eventfd, still owned by the tap (hand them to the daemon with
 * SCM_RIGHTS).  -ENOENT: no ring. */
int mr_tap__ring_fds(const struct mr_tap *t, int *ring_fd, int *eventfd);
/* The ring file's path; NULL for a memfd ring or no ring. */
const char *mr_tap__ring_path(const struct mr_tap *t);
/* 1 and the reason in one line once the ring was lost (its file truncated: mirroring into
 * it stopped, forwarding goes on), 0 if not, -ENOENT: no ring. */
int mr_tap__ring_lost(const struct mr_tap *t, char *reason, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* MIRRORD_TAP_H */
