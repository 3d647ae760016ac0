/* SPDX-License-Identifier: MIT */
/*
 * Remote mirror outputs: each copy encapsulated by mirrord itself and sent to one collector
 * of a list, in sendmmsg(2) batches from the drain (MR_DRAIN_ENCAP in drain.h).
 *
 *   VXLAN   (RFC 7348)  UDP, I flag, 24-bit VNI, destination port 4789 by default
 *   GENEVE  (RFC 8926)  UDP, version 0, no options, protocol 0x6558, VNI, port 6081
 *   ERSPAN  Type II (GRE 0x88BE) and Type III (GRE 0x22EB), with the GRE sequence number
 *           (draft-foschiano-erspan-03), session ID, T bit when the copy was cut
 *
 * Sockets.  RFC 7348 wants the UDP source port to follow the inner flow (so that ECMP and
 * RSS at the collector spread flows).  The UDP kinds send on a small pool of connected UDP
 * sockets per collector (source_ports, MR_ENCAP_PORTS_DEFAULT), each bound to its own source
 * port; the inner flow hash (mr_flow__hash, symmetric) picks the socket, so a flow keeps one
 * source port, the same both ways, and the collector sees source_ports values of entropy
 * (16 to 64 are plenty for a receiver's RSS queues or an ECMP group).  The ports are chosen
 * in 49152-65535 (RFC 7348's range) from a hash of the collector, kind, VNI and port, the
 * next one tried on EADDRINUSE: explicit binds keep a socket's port across a disconnect (no
 * route) and the same ports across restarts.  We write the VXLAN / GENEVE header and the
 * inner frame; the kernel writes the UDP header, keeps the route, offloads the checksum
 * (IPv4: zero, SO_NO_CHECK, as RFC 7348 section 5 asks; IPv6: computed) and takes the
 * lockless UDP send path, which a raw socket does not (it routes every send and copies with
 * a software checksum under the socket lock).  A flush sends one sendmmsg per socket that
 * has copies: copies of one flow stay in order, copies of different flows may not (as ECMP
 * would do to them anyway).
 * ERSPAN goes on a raw socket of protocol IPPROTO_GRE without IP_HDRINCL (no other socket
 * exists for GRE): we write the GRE header and the payload, the kernel routes, picks the
 * source address, builds the IPv4/IPv6 header; needs CAP_NET_RAW, which the daemon has.
 * Both honour IP_TTL/IP_TOS (IPV6_UNICAST_HOPS/IPV6_TCLASS), bind() to a local address.
 *
 * Path MTU.  Each collector's sockets are connected, with IP_PMTUDISC_DO (IPV6_PMTUDISC_DO
 * and IPV6_DONTFRAG): DF set, never fragmented by this host, the route's MTU (and a learned
 * path MTU) enforced.  The MTU is read with IP_MTU / IPV6_MTU from each connected socket
 * (the route's MTU, a "mtu" metric included; the smallest of a pool's) at open, once a
 * second (re-connected, so a route change is seen) and after any EMSGSIZE.  A copy whose encapsulation would exceed
 * it is cut to fit and counted truncated_mtu (ERSPAN sets its T bit).
 *
 * Errors.  Sockets are non-blocking and sent with MSG_DONTWAIT: a busy socket (ENOBUFS,
 * EAGAIN) or an unreachable collector (ENETUNREACH, EHOSTUNREACH: no route) drops the copy
 * and counts it; nothing waits.  The ICMP errors a collector sends back are read from each
 * socket's error queue (IP_RECVERR) at each refresh and counted as icmp_errors (on the raw
 * GRE socket a port unreachable only if it quotes our destination port: a raw socket is
 * handed the errors about every port of its collector's host).  A connected UDP socket also
 * reports the latest one on a send that starts a sendmmsg call (ECONNREFUSED: port
 * unreachable; the copy counts drop_unreachable): that starts the hold at once.  One that
 * says nobody takes our copies there (port, protocol, host or network unreachable,
 * administratively prohibited) holds the collector down: for hold_ms its copies are not
 * sent but dropped and counted drop_unreachable (an ERSPAN sequence number is still taken:
 * the collector sees the gap), and with spread = "flow" its flows go to their next choice
 * among the collectors that are up (only its flows move; they come back after the hold).
 * After the hold the copies go out again (a probe); an error at the next refresh holds it
 * down again for twice as long, up to MR_ENCAP_HOLD_MAX_MS; a refresh without one resets the
 * hold to MR_ENCAP_HOLD_MIN_MS.  Up to a refresh period of copies go out after the first
 * ICMP error, before it is read.
 */
#ifndef MIRRORD_ENCAP_H
#define MIRRORD_ENCAP_H

#include <stdint.h>
#include <sys/socket.h>

#include "mirrord/ring.h"

struct mr_drain_stats;

#define MR_ENCAP_VXLAN 1
#define MR_ENCAP_GENEVE 2
#define MR_ENCAP_ERSPAN2 3
#define MR_ENCAP_ERSPAN3 4

#define MR_ENCAP_MAX_COLLECTORS 16
#define MR_ENCAP_BATCH 64
#define MR_ENCAP_HDR_MAX 24          /* the longest header we write (ERSPAN III: GRE 8 + 12) */
#define MR_ENCAP_MAX_PORTS 64        /* UDP kinds: sockets (source ports) per collector, at most */
#define MR_ENCAP_PORTS_DEFAULT 16    /* ... and when the config says 0 */
#define MR_ENCAP_REFRESH_NS 1000000000ull /* MTU, route and ICMP errors re-read this often */
#define MR_ENCAP_HOLD_MIN_MS 1000u   /* a collector that sent an ICMP unreachable is held down... */
#define MR_ENCAP_HOLD_MAX_MS 32000u  /* ...doubling after each failed probe, up to this */

#define MR_VXLAN_PORT 4789
#define MR_GENEVE_PORT 6081

/* Per collector, accumulated for the life of the encap. */
struct mr_collector_stats {
	uint64_t pkts, bytes;        /* sent (bytes: the encapsulated payload we wrote, IP header excluded) */
	uint64_t drop_busy;          /* EAGAIN / ENOBUFS */
	uint64_t drop_unreachable;   /* ENETUNREACH / EHOSTUNREACH / ENETDOWN / EHOSTDOWN / ECONNREFUSED,
				      * or held down after an ICMP unreachable (hold_ms) */
	uint64_t drop_error;         /* any other send error (EMSGSIZE, EPERM by a firewall, ...) */
	uint64_t truncated_mtu;      /* sent, cut to fit the path MTU */
	uint64_t icmp_errors;        /* errors the socket reported (SO_ERROR): ICMP from the path */
	uint32_t mtu;                /* the path MTU in use (0: unknown, no route) */
	int32_t last_errno;          /* of the latest drop or socket error (0: none) */
	uint32_t hold_ms;            /* held down this long after an ICMP unreachable (0: up) */
	uint32_t _pad;
};

struct mr_collector {
	int fd;                      /* -1 while closed (UDP kinds: fds[0]) */
	int family;                  /* AF_INET / AF_INET6 */
	int connected;
	uint32_t seed;               /* rendezvous weight seed: a hash of the address */
	uint32_t gre_seq;            /* next GRE sequence number (ERSPAN) */
	uint32_t backoff_ms;         /* the next hold's length (0: MR_ENCAP_HOLD_MIN_MS) */
	uint64_t down_until;         /* CLOCK_MONOTONIC_COARSE ns the hold ends (st.hold_ms != 0) */
	unsigned nb;                 /* copies waiting in the batch */
	unsigned nfd;                /* sockets open: 1 (ERSPAN) or the pool's size (UDP kinds) */
	int fds[MR_ENCAP_MAX_PORTS]; /* UDP kinds: the pool, each bound to its own source port */
	uint16_t sport[MR_ENCAP_MAX_PORTS]; /* ... that port */
	socklen_t addrlen;
	struct sockaddr_storage addr;
	struct mr_collector_stats st;
	struct mmsghdr msgs[MR_ENCAP_BATCH];
	struct iovec iov[MR_ENCAP_BATCH][2];
	uint8_t hdr[MR_ENCAP_BATCH][MR_ENCAP_HDR_MAX];
	uint8_t rec_trunc[MR_ENCAP_BATCH];
	uint64_t rec_ts[MR_ENCAP_BATCH]; /* the ring record's stamp: the delay histogram */
	uint8_t sock[MR_ENCAP_BATCH]; /* UDP kinds: the pool socket of each waiting copy */
};

struct mr_encap_config {
	uint32_t kind;               /* MR_ENCAP_* */
	uint32_t vni;                /* VXLAN / GENEVE: 0 .. 2^24-1 */
	uint16_t port;               /* UDP destination port (0: the kind's default) */
	uint16_t session_id;         /* ERSPAN: 0 .. 1023 */
	int32_t ttl;                 /* -1: the system default */
	int32_t dscp;                /* -1: 0 */
	uint32_t spread;             /* 1: pick the collector by a symmetric flow hash (HRW) */
	uint32_t source_ports;       /* UDP kinds: the pool's size, 1 .. MR_ENCAP_MAX_PORTS (0: the default) */
};

struct mr_encap {
	struct mr_encap_config cfg;
	unsigned n;                  /* collectors */
	unsigned overhead4, overhead6; /* outer IP header + our header, per family */
	unsigned hdrlen;             /* our header (VXLAN / GENEVE, GRE + ERSPAN...) */
	unsigned ports;              /* UDP kinds: sockets per collector (0: ERSPAN, one raw socket) */
	uint8_t tmpl[8];             /* UDP kinds: the VXLAN / GENEVE header, the same for every copy */
	uint64_t refresh_at;         /* CLOCK_MONOTONIC ns of the next refresh */
	struct mr_drain_stats *st;   /* the route whose copies wait in the batches */
	struct mr_collector c[MR_ENCAP_MAX_COLLECTORS];
};

/* Setup (not on the hot path).  mr_encap__new returns NULL (errno set) on a bad config. */
struct mr_encap *mr_encap__new(const struct mr_encap_config *cfg);
void mr_encap__free(struct mr_encap *e);
/* Add a collector: family AF_INET (addr: 4 bytes) or AF_INET6 (16).  Returns its index or
 * -EINVAL / -ENOSPC.  No socket yet. */
int mr_encap__add(struct mr_encap *e, int family, const uint8_t *addr);
/* Open every collector's socket (bound to local if local_len: 4 or 16 bytes of the same
 * family).  A collector without a route is not a failure: its copies count as unreachable
 * until a refresh finds one.  Returns 0, or a negative errno with err naming the collector
 * and the step (closing what it opened). */
int mr_encap__open(struct mr_encap *e, const uint8_t *local, unsigned local_len, char *err, size_t errlen);
void mr_encap__close(struct mr_encap *e);
/* Re-connect, re-read the MTU and the pending socket error of every collector now. */
void mr_encap__refresh(struct mr_encap *e);
/* Collector i's (first) socket (-1 while closed or past the last one). */
int mr_encap__fd(const struct mr_encap *e, unsigned i);
/* Copy collector i's counters out; -ERANGE past the last one. */
int mr_encap__stats(const struct mr_encap *e, unsigned i, struct mr_collector_stats *out);

/* Hot path, from mr_cons__drain: queue one copy (the iov points into the ring: flush before
 * the records are released), and send every waiting batch. */
void mr_encap__push(struct mr_encap *e, const struct mr_frame *f, struct mr_drain_stats *st);
void mr_encap__flush(struct mr_encap *e);

/* The symmetric flow hash (5-tuple of IPv4/IPv6 TCP/UDP/SCTP, addresses for other IP, MACs
 * otherwise; VLAN tags skipped) and the collector rendezvous hashing picks for it. */
uint32_t mr_flow__hash(const uint8_t *frame, uint32_t len);
unsigned mr_encap__pick(const struct mr_encap *e, uint32_t flow_hash);

#endif /* MIRRORD_ENCAP_H */
