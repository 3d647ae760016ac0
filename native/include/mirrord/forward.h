/* SPDX-License-Identifier: MIT */
/*
 * mirrord reference fast path: an AF_XDP bump-in-the-wire forwarder (libxdp xsk API)
 * that mirrors sampled frames into per-binding rings.
 *
 * A pair (A, B) forwards what arrives on A out of B and the reverse.  Each direction is a
 * binding: the AF_XDP socket on (interface, queue) it receives on, with its own sampling
 * state, mirror table and ring.  One worker thread serves one pair (both bindings).
 * Forwarding never waits for mirroring: a copy that does not fit in the ring is dropped
 * and counted; a binding with no ring or no session just forwards.
 */
#ifndef MIRRORD_FORWARD_H
#define MIRRORD_FORWARD_H

#include <stddef.h>
#include <stdint.h>

#include "mirrord/tap.h"

struct mr_fwd;

/* One rule of what a binding mirrors; its table (a default rule and rules per outer VLAN
 * ID, tap.h) is swapped whole (RCU style) by mr_fwd__set_mirror / mr_fwd__set_mirrors. */
struct mr_mirror_cfg {
	uint32_t session_id;  /* 0: mirroring off for this binding */
	uint32_t rate;        /* 0/1: every frame; N: frame k when k mod N == 0 */
	uint32_t run_length;  /* after a sampled frame, also the next run_length frames */
	uint32_t max_len;     /* truncate copies to this (0: whole frame, up to the ring's max) */
	const void *filter;   /* the session's capture filter: struct bpf_insn[filter_len] */
	uint32_t filter_len;  /* 0: no filter (tap.h, mr_tap__set_rule_filter) */
	uint32_t vid;         /* 0: the default rule; 1-4094: frames whose outer VLAN tag has this VID */
	uint32_t flags;       /* MR_TAP_RULE_* (tap.h): MR_TAP_RULE_WHEN_LISTENED */
};

/*
 * Per binding, named as in the status file, `mirrord status` and /metrics.  The worker's
 * counts are read with relaxed loads while it runs; the xdp_* ones are the kernel's own
 * (getsockopt XDP_STATISTICS), read at each mr_fwd__counters call: xdp_rx_* from this
 * binding's ingress socket, xdp_tx_* from its egress socket.  Packets, not descriptors.
 */
struct mr_binding_counters {
	uint64_t rx_packets, rx_bytes;     /* received on this binding's socket */
	uint64_t tx_packets, tx_bytes;     /* forwarded out of the peer (submitted to its TX ring) */
	uint64_t dropped_tx_full;          /* forwarder drop: no TX slot or UMEM frame on the peer */
	uint64_t dropped_tx_down;          /* forwarder drop: the peer's link is gone (ENXIO) or down */
	uint64_t mirror_sampled;           /* frames chosen by the sampling rule */
	uint64_t mirror_pushed;            /* copies in the ring */
	uint64_t mirror_dropped_ring_full; /* copies dropped: ring full */
	uint64_t mirror_dropped_no_ring;   /* copies dropped: the binding has no ring */
	uint64_t mirror_table_generation;  /* mirror table generation the worker last used */
	uint64_t xdp_rx_dropped;               /* kernel: no fill frame, too long, ... (ingress) */
	uint64_t xdp_rx_invalid_descs;         /* kernel: bad fill descriptors (ingress) */
	uint64_t xdp_rx_ring_full;             /* kernel: RX ring full, frame dropped (ingress) */
	uint64_t xdp_rx_fill_ring_empty_descs; /* kernel: found the fill ring empty (ingress) */
	uint64_t xdp_tx_invalid_descs;         /* kernel: bad TX descriptors, not sent (egress) */
	uint64_t xdp_tx_ring_empty_descs;      /* kernel: a TX wake-up found the ring empty (egress) */
	uint64_t mirror_dropped_ring_lost; /* copies dropped: the ring's file was truncated (and
					    * every copy of the batch in which that was seen) */
	uint64_t mirror_filtered;          /* frames the session's filter rejected, before sampling */
	uint64_t mirror_skipped_no_listener; /* sampled, not copied: nobody listens to the output */
};

#define MR_FWD_MAX_PAIRS 16

int mr_fwd__create(struct mr_fwd **out);
/* A pair of interfaces on one queue; returns the pair index (bindings 2i: A->B, 2i+1: B->A)
 * or -errno with a message.  skb_mode: 1 generic XDP (any driver, veth), 0 native. */
int mr_fwd__add_pair(struct mr_fwd *f, const char *a, const char *b, uint32_t queue, int skb_mode,
		     char *err, size_t errlen);
/* Give binding `binding` a ring at `path` (created by the forwarder, which owns it). */
int mr_fwd__set_ring(struct mr_fwd *f, unsigned binding, const char *path, uint32_t data_size,
		     const char *name, char *err, size_t errlen);
/* Swap a binding's mirror table; returns once the worker no longer uses the old one.
 * set_mirror: a table of one default rule (cfg->vid is ignored); set_mirrors: n rules, at
 * most one per vid (mr_tap__set_rules: -EINVAL beyond its bounds). */
int mr_fwd__set_mirror(struct mr_fwd *f, unsigned binding, const struct mr_mirror_cfg *cfg);
int mr_fwd__set_mirrors(struct mr_fwd *f, unsigned binding, const struct mr_mirror_cfg *cfgs, unsigned n);
/* The counters of the binding's rules in force, per (vid, session) (mr_tap__rule_counters):
 * returns how many there are, at most max written. */
int mr_fwd__rule_counters(const struct mr_fwd *f, unsigned binding, struct mr_tap_rule_counters *out,
			  unsigned max);
int mr_fwd__start(struct mr_fwd *f);
void mr_fwd__stop(struct mr_fwd *f);
void mr_fwd__destroy(struct mr_fwd *f);
int mr_fwd__binding_info(const struct mr_fwd *f, unsigned binding, int *ifindex, uint32_t *queue);
/* The ring's descriptors (owned by the forwarder), to hand to the daemon with SCM_RIGHTS. */
int mr_fwd__ring_fds(const struct mr_fwd *f, unsigned binding, int *ring_fd, int *efd);
/* 1 and the reason in one line once the binding's ring was lost (its file truncated:
 * mirroring into it stopped, forwarding goes on), 0 if not, -EINVAL/-ENOENT. */
int mr_fwd__ring_lost(const struct mr_fwd *f, unsigned binding, char *reason, size_t len);
void mr_fwd__counters(const struct mr_fwd *f, unsigned binding, struct mr_binding_counters *out);

#endif /* MIRRORD_FORWARD_H */
