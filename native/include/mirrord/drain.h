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

/*
 * Ring-to-output delay of delivered copies: the output's clock (CLOCK_REALTIME, as mirrord
 * forward stamps ts_ns) when the send returned, minus the record's ts_ns.  Bucket i counts
 * delays <= mr_lat__bound_ns(i) and above the bound before it (10 us ... 100 ms); the last
 * bucket is everything above 100 ms.  The clock is read once per 16 deliveries (it is the
 * time after the first send of those 16), so a delay can read up to 15 sends short.
 * Records with ts_ns 0 (not stamped) are not counted.  lat_sum_ns adds each delay capped
 * at MR_LAT_CAP_NS (a stamp of another clock cannot overflow it).
 */
#define MR_LAT_BUCKETS 14
#define MR_LAT_CAP_NS 60000000000ull

/* Per route, accumulated across calls (the caller zeroes them once). */
struct mr_drain_stats {
	uint64_t pkts, bytes;        /* delivered */
	uint64_t drop_busy;          /* EAGAIN / EWOULDBLOCK / ENOBUFS */
	uint64_t drop_error;         /* any other send error (e.g. EIO: device down) */
	uint64_t drop_not_ip;        /* MR_DRAIN_WRITE_L3 and not IPv4/IPv6 */
	uint64_t drop_no_output;     /* fd < 0 */
	uint64_t truncated;          /* delivered copies flagged TRUNCATED */
	uint64_t lat[MR_LAT_BUCKETS]; /* delivered copies by ring-to-output delay (see above) */
	uint64_t lat_sum_ns;
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

/* Upper bound of latency bucket i in ns (UINT64_MAX for the last). */
uint64_t mr_lat__bound_ns(unsigned i);
/* For delivery paths outside drain.c (encap.c): the clock the producers stamp with
 * (CLOCK_REALTIME) and one delivered copy stamped ts into st's delay buckets. */
uint64_t mr_lat__now(void);
void mr_lat__note(struct mr_drain_stats *st, uint64_t now, uint64_t ts);

/* Offset of the L3 header in an Ethernet frame after any 802.1Q/802.1ad tags, and its
 * ethertype; -1 if the frame is too short. */
int mr_frame__l3_offset(const uint8_t *frame, uint32_t len, uint16_t *ethertype);

/*
 * Wake coalescing: drain many rings in one call.  A consumer that polls its rings on a
 * timer (need_wakeup left clear, so producers make no eventfd syscall) calls this once per
 * tick over every ring it polls, instead of once per ring from its event loop.
 */
struct mr_drain_job {
	struct mr_cons *c;
	const struct mr_route *routes;
	struct mr_drain_stats *stats;
	struct mr_drain_totals *totals;
	uint32_t nroutes;
	int32_t result;      /* out: what mr_cons__drain returned for this ring */
	uint64_t busy_ns;    /* in/out: CLOCK_MONOTONIC of the last call that found a record */
	uint64_t corrupt;    /* in/out: totals->corrupt already seen by the caller's last look */
};

/*
 * mr_cons__drain every job's ring once, up to budget records each.  Returns the records
 * taken in all, and in *attention the jobs the caller must look at: result < 0 (lost
 * ring) or == budget (more waiting), a new corruption event, or no record for idle_ns
 * (since busy_ns; time to re-arm need_wakeup and sleep).  attention == 0, the common
 * case, means nothing to do per ring.  now_ns: CLOCK_MONOTONIC as read once by the caller.
 */
uint64_t mr_cons__drain_set(struct mr_drain_job *jobs, unsigned n, unsigned budget, uint64_t now_ns,
			    uint64_t idle_ns, unsigned *attention);

#endif /* MIRRORD_DRAIN_H */
