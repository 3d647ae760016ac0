/* SPDX-License-Identifier: MIT */
/* Remote mirror outputs: VXLAN and GENEVE over pools of UDP sockets, ERSPAN II/III over a raw
 * GRE socket; see mirrord/encap.h. */
#define _GNU_SOURCE
#include "mirrord/encap.h"
#include "mirrord/drain.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/errqueue.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef IPV6_DONTFRAG
#define IPV6_DONTFRAG 62
#endif

#define GRE_F_SEQ 0x1000
#define GRE_P_ERSPAN2 0x88BE
#define GRE_P_ERSPAN3 0x22EB
#define GENEVE_P_ETHERNET 0x6558
#define ERSPAN_GRA_100NS 1u          /* Type III timestamp granularity: 100 ns units */
#define IPV4_HDR 20u
#define IPV6_HDR 40u
#define MR_ENCAP_ERRQ_MAX 256u      /* ICMP errors read per refresh, at most */
#define MIN_INNER 14u                /* never cut an inner frame below its Ethernet header */

static inline uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int unreachable(int e)
{
	return e == ENETUNREACH || e == EHOSTUNREACH || e == ENETDOWN || e == EHOSTDOWN || e == ECONNREFUSED;
}

/* An error the collector's path sent back (ICMP) that says nobody there takes our copies:
 * port unreachable (ECONNREFUSED), protocol unreachable (ENOPROTOOPT; over IPv6 a parameter
 * problem, EPROTO), host or network unreachable, administratively prohibited. */
static int holds_down(int e)
{
	return unreachable(e) || e == ENOPROTOOPT || e == EPROTO || e == EACCES;
}

/* ------------------------------------------------------------------ flow hash */

static inline uint64_t mix64(uint64_t x)
{
	/* splitmix64's finaliser: every input bit reaches every output bit */
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

static inline uint64_t rd32(const uint8_t *p)
{
	return (uint64_t)p[0] << 24 | (uint64_t)p[1] << 16 | (uint64_t)p[2] << 8 | p[3];
}

static inline uint64_t rd48(const uint8_t *p)
{
	return rd32(p) << 16 | (uint64_t)p[4] << 8 | p[5];
}

/* Hash two endpoints (n 32-bit words of address each, plus a port) in a fixed order (the
 * smaller first), so that both directions of a flow give the same value. */
static uint64_t hash_pair(const uint8_t *a, const uint8_t *b, unsigned words, uint32_t pa, uint32_t pb,
			  uint32_t proto)
{
	int c = memcmp(a, b, words * 4);
	if (c > 0 || (c == 0 && pa > pb)) {
		const uint8_t *t = a;
		a = b;
		b = t;
		uint32_t tp = pa;
		pa = pb;
		pb = tp;
	}
	uint64_t h = 0x6d6972726f726421ull ^ proto;
	for (unsigned i = 0; i < words; i++)
		h = mix64(h ^ (rd32(a + 4 * i) << 32 | rd32(b + 4 * i)));
	return mix64(h ^ ((uint64_t)pa << 16 | pb));
}

uint32_t mr_flow__hash(const uint8_t *f, uint32_t len)
{
	uint16_t et;
	int off = mr_frame__l3_offset(f, len, &et);
	if (off >= 0) {
		const uint8_t *l3 = f + off;
		uint32_t rest = len - (uint32_t)off;
		uint32_t proto = 0, sp = 0, dp = 0;
		if (et == 0x0800 && rest >= IPV4_HDR && (l3[0] >> 4) == 4) {
			uint32_t ihl = (l3[0] & 15u) * 4;
			int frag = (l3[6] & 0x3f) || l3[7]; /* MF or an offset: no ports in every piece */
			proto = l3[9];
			if ((proto == 6 || proto == 17 || proto == 132) && !frag && ihl >= IPV4_HDR && rest >= ihl + 4) {
				sp = (uint32_t)(l3[ihl] << 8 | l3[ihl + 1]);
				dp = (uint32_t)(l3[ihl + 2] << 8 | l3[ihl + 3]);
			}
			return (uint32_t)hash_pair(l3 + 12, l3 + 16, 1, sp, dp, proto);
		}
		if (et == 0x86dd && rest >= IPV6_HDR && (l3[0] >> 4) == 6) {
			proto = l3[6]; /* extension headers are not walked: their flows hash by address */
			if ((proto == 6 || proto == 17 || proto == 132) && rest >= IPV6_HDR + 4) {
				sp = (uint32_t)(l3[40] << 8 | l3[41]);
				dp = (uint32_t)(l3[42] << 8 | l3[43]);
			}
			return (uint32_t)hash_pair(l3 + 8, l3 + 24, 4, sp, dp, proto);
		}
	}
	if (len < 12)
		return 0;
	/* not IP (ARP, LLDP, a runt): the two MACs, in either order */
	uint64_t a = rd48(f), b = rd48(f + 6);
	if (a > b) {
		uint64_t t = a;
		a = b;
		b = t;
	}
	return (uint32_t)mix64(mix64(a ^ 0x6e6f6e6970ull) ^ b);
}

unsigned mr_encap__pick(const struct mr_encap *e, uint32_t h)
{
	/* rendezvous (highest random weight) hashing: each collector's weight for this flow
	 * depends on the flow and that collector's own address only, so removing or adding a
	 * collector moves the flows that it wins or won, and no others.
	 * A collector held down (an ICMP unreachable, encap.h) is left out while it is: its
	 * flows go to their second choice and come back when it is up; no other flow moves.
	 * When every one is held, the flow keeps its first choice (and its copies count there). */
	unsigned best = 0, up = e->n;
	uint64_t bw = 0, uw = 0;
	for (unsigned i = 0; i < e->n; i++) {
		uint64_t w = mix64((uint64_t)h << 32 ^ e->c[i].seed ^ 0x9e3779b97f4a7c15ull);
		if (i == 0 || w > bw) {
			bw = w;
			best = i;
		}
		if (!e->c[i].st.hold_ms && (up == e->n || w > uw)) {
			uw = w;
			up = i;
		}
	}
	return up < e->n ? up : best;
}

static inline void put16(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* ------------------------------------------------------------------ setup */

static void close_collector(struct mr_collector *c);

struct mr_encap *mr_encap__new(const struct mr_encap_config *cfg)
{
	if (cfg->kind < MR_ENCAP_VXLAN || cfg->kind > MR_ENCAP_ERSPAN3 || cfg->vni > 0xFFFFFF ||
	    cfg->session_id > 1023 || cfg->ttl > 255 || cfg->dscp > 63 || cfg->source_ports > MR_ENCAP_MAX_PORTS) {
		errno = EINVAL;
		return NULL;
	}
	struct mr_encap *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->cfg = *cfg;
	if (!e->cfg.port)
		e->cfg.port = cfg->kind == MR_ENCAP_GENEVE ? MR_GENEVE_PORT : MR_VXLAN_PORT;
	switch (cfg->kind) {
	case MR_ENCAP_VXLAN:
	case MR_ENCAP_GENEVE:
		/* VXLAN / GENEVE without options (the kernel writes the UDP header), or UDP + it */
		e->ports = cfg->source_ports ? cfg->source_ports : MR_ENCAP_PORTS_DEFAULT;
		e->hdrlen = 8;
		break;
	case MR_ENCAP_ERSPAN2:
		e->hdrlen = 8 + 8; /* GRE with sequence + ERSPAN II */
		break;
	default:
		e->hdrlen = 8 + 12; /* GRE with sequence + ERSPAN III */
	}
	if (cfg->kind <= MR_ENCAP_GENEVE) { /* VXLAN / GENEVE: the kernel writes the UDP header */
		put32(e->tmpl, cfg->kind == MR_ENCAP_VXLAN ? 0x08000000u /* flags: I, a valid VNI */
							   : GENEVE_P_ETHERNET); /* ver 0, no options, O 0, C 0 */
		put32(e->tmpl + 4, e->cfg.vni << 8);
	}
	e->overhead4 = IPV4_HDR + (e->ports ? 8 : 0) + e->hdrlen;
	e->overhead6 = IPV6_HDR + (e->ports ? 8 : 0) + e->hdrlen;
	for (unsigned i = 0; i < MR_ENCAP_MAX_COLLECTORS; i++)
		e->c[i].fd = -1;
	return e;
}

void mr_encap__free(struct mr_encap *e)
{
	if (!e)
		return;
	mr_encap__close(e);
	free(e);
}

int mr_encap__add(struct mr_encap *e, int family, const uint8_t *addr)
{
	if (e->n == MR_ENCAP_MAX_COLLECTORS)
		return -ENOSPC;
	struct mr_collector *c = &e->c[e->n];
	memset(&c->addr, 0, sizeof(c->addr));
	/* raw sockets take the port field of the address as the protocol (or ignore it): 0 */
	uint16_t port = e->ports ? htons(e->cfg.port) : 0;
	if (family == AF_INET) {
		struct sockaddr_in *s = (struct sockaddr_in *)&c->addr;
		s->sin_family = AF_INET;
		s->sin_port = port;
		memcpy(&s->sin_addr, addr, 4);
		c->addrlen = sizeof(*s);
	} else if (family == AF_INET6) {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&c->addr;
		s->sin6_family = AF_INET6;
		s->sin6_port = port;
		memcpy(&s->sin6_addr, addr, 16);
		c->addrlen = sizeof(*s);
	} else {
		return -EINVAL;
	}
	c->family = family;
	uint64_t h = 0x636f6c6cull;
	for (unsigned i = 0; i < (family == AF_INET ? 4u : 16u); i += 4)
		h = mix64(h ^ rd32(addr + i));
	c->seed = (uint32_t)(h ^ h >> 32);
	c->fd = -1;
	return (int)e->n++;
}

/*
 * The ICMP errors the collector's path sent back since the last look, from the socket's
 * error queue (IP_RECVERR / IPV6_RECVERR), each counted icmp_errors; returns the errno of
 * the last one that holds the collector down (holds_down()), or 0.  A pool socket is handed
 * the errors about its own 4-tuple only (port unreachable included); the raw GRE socket
 * those about GRE to that host (protocol, host and network unreachable, which hold every
 * session to that host down).  Bounded: at most
 * MR_ENCAP_ERRQ_MAX per look (the queue itself is bounded by the socket's receive buffer).
 */
static int read_errors(struct mr_collector *c, int fd)
{
	int hold = 0;
	for (unsigned n = 0; n < MR_ENCAP_ERRQ_MAX; n++) {
		uint8_t quoted[8];
		union {
			char buf[CMSG_SPACE(sizeof(struct sock_extended_err) + sizeof(struct sockaddr_in6))];
			struct cmsghdr align;
		} ctl;
		struct iovec iov = {quoted, sizeof(quoted)};
		struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
				   .msg_controllen = sizeof(ctl.buf)};
		ssize_t r = recvmsg(fd, &m, MSG_ERRQUEUE | MSG_DONTWAIT);
		if (r < 0)
			break;
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm)) {
			if (!((cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_RECVERR) ||
			      (cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_RECVERR)))
				continue;
			struct sock_extended_err ee;
			memcpy(&ee, CMSG_DATA(cm), sizeof(ee));
			if (ee.ee_origin != SO_EE_ORIGIN_ICMP && ee.ee_origin != SO_EE_ORIGIN_ICMP6)
				continue; /* a local error (EMSGSIZE...): the send counted it already */
			c->st.icmp_errors++;
			c->st.last_errno = (int32_t)ee.ee_errno;
			if (holds_down((int)ee.ee_errno))
				hold = (int)ee.ee_errno;
		}
	}
	return hold;
}

/* Hold collector c down now (not already held): nobody takes our copies there.  Its copies
 * are dropped and counted unreachable, its flows go to the others with spread = "flow";
 * after the hold they are sent again (a probe), and each error right after a probe doubles
 * the next hold, up to a cap. */
static void hold_down(struct mr_encap *e, struct mr_collector *c, uint64_t now)
{
	uint32_t hold = c->backoff_ms ? c->backoff_ms : MR_ENCAP_HOLD_MIN_MS;
	c->st.hold_ms = hold;
	c->down_until = now + (uint64_t)hold * 1000000ull;
	c->backoff_ms = hold * 2 > MR_ENCAP_HOLD_MAX_MS ? MR_ENCAP_HOLD_MAX_MS : hold * 2;
	if (c->down_until < e->refresh_at)
		e->refresh_at = c->down_until; /* the hold ends on time, not at the next second */
}

static void refresh_one(struct mr_encap *e, struct mr_collector *c, uint64_t now)
{
	int v = 0, err = 0;
	socklen_t l;
	if (c->fd < 0)
		return;
	for (unsigned s = 0; s < c->nfd; s++) {
		int r = read_errors(c, c->fds[s]);
		err = r ? r : err;
		/* sk_err holds the latest of them too: clear it (a pool socket's next send would
		 * report it; the error queue has told us already) */
		int se = 0;
		l = sizeof(se);
		(void)getsockopt(c->fds[s], SOL_SOCKET, SO_ERROR, &se, &l);
	}
	if (c->st.hold_ms) {
		/* nothing was sent while held: an error read now is from before the hold */
		if (now >= c->down_until)
			c->st.hold_ms = 0; /* probe: its copies go out again */
	} else if (err) {
		hold_down(e, c, now);
	} else {
		c->backoff_ms = 0; /* a refresh with no error while up: the next hold starts short */
	}
	/* connect again: a fresh route (and MTU) after a route change, or a first one; every
	 * socket of a pool has the same destination, so the same route */
	uint32_t mtu = 0;
	c->connected = 1;
	for (unsigned s = 0; s < c->nfd && c->connected; s++) {
		if (connect(c->fds[s], (struct sockaddr *)&c->addr, c->addrlen) == 0) {
			v = 0;
			l = sizeof(v);
			if (getsockopt(c->fds[s], c->family == AF_INET ? IPPROTO_IP : IPPROTO_IPV6,
				       c->family == AF_INET ? IP_MTU : IPV6_MTU, &v, &l) == 0 && v > 0 &&
			    (!mtu || (uint32_t)v < mtu))
				mtu = (uint32_t)v;
		} else {
			c->connected = 0;
		}
	}
	if (!c->connected) {
		/* no route: copies fail at send with ENETUNREACH and count as unreachable (a pool
		 * socket keeps its bound port: SOCK_BINDPORT_LOCK) */
		struct sockaddr un = {.sa_family = AF_UNSPEC};
		for (unsigned s = 0; s < c->nfd; s++)
			(void)connect(c->fds[s], &un, sizeof(un));
		mtu = 0;
	}
	c->st.mtu = mtu;
	/* the destination rides in each message only while unconnected (no route at the last
	 * look: the send says why); set here for every batch slot, not per copy */
	for (unsigned k = 0; k < MR_ENCAP_BATCH; k++) {
		c->msgs[k].msg_hdr.msg_name = c->connected ? NULL : &c->addr;
		c->msgs[k].msg_hdr.msg_namelen = c->connected ? 0 : c->addrlen;
	}
}

void mr_encap__refresh(struct mr_encap *e)
{
	uint64_t now = now_ns();
	e->refresh_at = now + MR_ENCAP_REFRESH_NS;
	for (unsigned i = 0; i < e->n; i++) {
		struct mr_collector *c = &e->c[i];
		refresh_one(e, c, now);
		if (c->st.hold_ms && c->down_until < e->refresh_at)
			e->refresh_at = c->down_until; /* the hold ends on time, not at the next second */
	}
}

int mr_encap__fd(const struct mr_encap *e, unsigned i)
{
	return i < e->n ? e->c[i].fd : -1;
}

int mr_encap__stats(const struct mr_encap *e, unsigned i, struct mr_collector_stats *out)
{
	if (i >= e->n)
		return -ERANGE;
	*out = e->c[i].st;
	return 0;
}

static int fail(char *err, size_t errlen, int e, const char *fmt, const char *who)
{
	if (err && errlen)
		snprintf(err, errlen, fmt, who, strerror(e));
	return -e;
}

static void addr_text(const struct mr_collector *c, char *buf, size_t len)
{
	const void *a = c->family == AF_INET ? (const void *)&((const struct sockaddr_in *)&c->addr)->sin_addr
					     : (const void *)&((const struct sockaddr_in6 *)&c->addr)->sin6_addr;
	if (!inet_ntop(c->family, a, buf, (socklen_t)len))
		snprintf(buf, len, "?");
}

/* The options every socket of a collector takes (DF, error queue, TTL, DSCP; a raw UDP
 * socket the IPv6 checksum, a pool socket IPv4's zero one); 0 or -1 with errno. */
static int sock_opts(struct mr_encap *e, struct mr_collector *c, int fd, int proto)
{
	int one = 1, v;
	/* a raw socket gets a copy of every GRE datagram to this host, a pool socket the
	 * datagrams the collector might send to its port: accept none */
	struct sock_filter none = BPF_STMT(BPF_RET | BPF_K, 0);
	struct sock_fprog prog = {.len = 1, .filter = &none};
	v = 4 << 20;
	if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v)))
		return -1;
	if (c->family == AF_INET) {
		v = IP_PMTUDISC_DO; /* DF, never fragmented here, the route's MTU enforced */
		if (setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &v, sizeof(v)) ||
		    setsockopt(fd, IPPROTO_IP, IP_RECVERR, &one, sizeof(one))) /* read_errors() */
			return -1;
		if (e->cfg.ttl >= 0 && setsockopt(fd, IPPROTO_IP, IP_TTL, &e->cfg.ttl, sizeof(int)))
			return -1;
		v = e->cfg.dscp > 0 ? e->cfg.dscp << 2 : 0;
		if (v && setsockopt(fd, IPPROTO_IP, IP_TOS, &v, sizeof(v)))
			return -1;
		/* RFC 7348 section 5: the UDP checksum SHOULD be zero over IPv4 (RFC 8926 allows it) */
		if (proto == IPPROTO_UDP && setsockopt(fd, SOL_SOCKET, SO_NO_CHECK, &one, sizeof(one)))
			return -1;
	} else {
		v = IPV6_PMTUDISC_DO;
		if (setsockopt(fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, &v, sizeof(v)) ||
		    setsockopt(fd, IPPROTO_IPV6, IPV6_RECVERR, &one, sizeof(one)) ||
		    setsockopt(fd, IPPROTO_IPV6, IPV6_DONTFRAG, &one, sizeof(one)))
			return -1;
		if (e->cfg.ttl >= 0 && setsockopt(fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &e->cfg.ttl, sizeof(int)))
			return -1;
		v = e->cfg.dscp > 0 ? e->cfg.dscp << 2 : 0;
		if (v && setsockopt(fd, IPPROTO_IPV6, IPV6_TCLASS, &v, sizeof(v)))
			return -1;
		/* UDP over IPv6: the kernel computes the checksum (a zero one is dropped by default,
		 * RFC 6935/6936); V6ONLY: the socket's port is not taken from IPv4 as well */
		if (proto == IPPROTO_UDP && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)))
			return -1;
	}
	return 0;
}

/* The local address (or the wildcard when local_len is 0) with port, as bind() takes it;
 * its length, or 0 when local is of the other family. */
static socklen_t local_addr(const struct mr_collector *c, const uint8_t *local, unsigned local_len, uint16_t port,
			    struct sockaddr_storage *la)
{
	memset(la, 0, sizeof(*la));
	if (c->family == AF_INET && (local_len == 4 || !local_len)) {
		struct sockaddr_in *s = (struct sockaddr_in *)la;
		s->sin_family = AF_INET;
		s->sin_port = htons(port);
		if (local_len)
			memcpy(&s->sin_addr, local, 4);
		return sizeof(*s);
	}
	if (c->family == AF_INET6 && (local_len == 16 || !local_len)) {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)la;
		s->sin6_family = AF_INET6;
		s->sin6_port = htons(port);
		if (local_len)
			memcpy(&s->sin6_addr, local, 16);
		return sizeof(*s);
	}
	return 0;
}

static void slots_init(struct mr_encap *e, struct mr_collector *c)
{
	c->nb = 0;
	for (unsigned k = 0; k < MR_ENCAP_BATCH; k++) {
		memset(&c->msgs[k], 0, sizeof(c->msgs[k]));
		c->msgs[k].msg_hdr.msg_iov = c->iov[k];
		c->msgs[k].msg_hdr.msg_iovlen = 2;
		/* UDP kinds on the pool: the VXLAN / GENEVE header is the same for every copy */
		c->iov[k][0].iov_base = e->ports ? e->tmpl : c->hdr[k];
		c->iov[k][0].iov_len = e->hdrlen;
	}
}

static int open_raw(struct mr_encap *e, struct mr_collector *c, const uint8_t *local, unsigned local_len,
		    char *err, size_t errlen)
{
	char who[INET6_ADDRSTRLEN];
	int proto = IPPROTO_GRE;
	addr_text(c, who, sizeof(who));
	int fd = socket(c->family, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, proto);
	if (fd < 0)
		return fail(err, errlen, errno, "collector %s: cannot make a raw socket: %s", who);
	if (sock_opts(e, c, fd, proto)) {
		int en = errno;
		close(fd);
		return fail(err, errlen, en, "collector %s: socket option refused: %s", who);
	}
	if (local_len) {
		struct sockaddr_storage la;
		socklen_t ll = local_addr(c, local, local_len, 0, &la);
		if (!ll) {
			close(fd);
			return fail(err, errlen, EAFNOSUPPORT, "collector %s: local address of the other family: %s",
				    who);
		}
		if (bind(fd, (struct sockaddr *)&la, ll)) {
			int en = errno;
			close(fd);
			return fail(err, errlen, en, "collector %s: cannot use the local address: %s", who);
		}
	}
	c->fd = c->fds[0] = fd;
	c->nfd = 1;
	slots_init(e, c);
	refresh_one(e, c, now_ns());
	return 0;
}

/*
 * The pool of a UDP kind: e->ports UDP sockets, each bound to its own source port.  The
 * ports are taken in 49152-65535 from a start hashed from the collector, the kind, the VNI
 * and the destination port (two sessions to one collector start apart), stepping by an odd
 * stride (a permutation of the 16384 ports); a port in use (EADDRINUSE: another socket, an
 * old one of ours during a reload) is skipped.  Bounded: at most 4 tries per socket, +64.
 */
static int open_pool(struct mr_encap *e, struct mr_collector *c, const uint8_t *local, unsigned local_len,
		     char *err, size_t errlen)
{
	char who[INET6_ADDRSTRLEN];
	addr_text(c, who, sizeof(who));
	struct sockaddr_storage la;
	if (!local_addr(c, local, local_len, 0, &la))
		return fail(err, errlen, EAFNOSUPPORT, "collector %s: local address of the other family: %s", who);
	uint64_t x = mix64((uint64_t)c->seed << 32 ^ e->cfg.kind << 24 ^ e->cfg.vni) ^ e->cfg.port;
	unsigned start = (unsigned)mix64(x) & 0x3fffu, tries = 0, maxtries = 4 * e->ports + 64;
	c->nfd = 0;
	while (c->nfd < e->ports) {
		if (tries == maxtries) {
			close_collector(c);
			return fail(err, errlen, EADDRINUSE, "collector %s: no free source port in 49152-65535: %s", who);
		}
		uint16_t port = (uint16_t)(49152u + ((start + tries++ * 0x9e37u) & 0x3fffu));
		int fd = socket(c->family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_UDP);
		if (fd < 0) {
			int en = errno;
			close_collector(c);
			return fail(err, errlen, en, "collector %s: cannot make a UDP socket: %s", who);
		}
		if (sock_opts(e, c, fd, IPPROTO_UDP)) {
			int en = errno;
			close(fd);
			close_collector(c);
			return fail(err, errlen, en, "collector %s: socket option refused: %s", who);
		}
		socklen_t ll = local_addr(c, local, local_len, port, &la);
		if (bind(fd, (struct sockaddr *)&la, ll)) {
			int en = errno;
			close(fd);
			if (en == EADDRINUSE)
				continue;
			close_collector(c);
			return fail(err, errlen, en, local_len ? "collector %s: cannot use the local address: %s"
							       : "collector %s: cannot bind a source port: %s", who);
		}
		c->sport[c->nfd] = port;
		c->fds[c->nfd++] = fd;
	}
	c->fd = c->fds[0];
	slots_init(e, c);
	refresh_one(e, c, now_ns());
	return 0;
}

static int open_one(struct mr_encap *e, struct mr_collector *c, const uint8_t *local, unsigned local_len,
		    char *err, size_t errlen)
{
	return e->ports ? open_pool(e, c, local, local_len, err, errlen) : open_raw(e, c, local, local_len, err, errlen);
}

int mr_encap__open(struct mr_encap *e, const uint8_t *local, unsigned local_len, char *err, size_t errlen)
{
	for (unsigned i = 0; i < e->n; i++) {
		int r = open_one(e, &e->c[i], local, local_len, err, errlen);
		if (r) {
			mr_encap__close(e);
			return r;
		}
	}
	mr_encap__refresh(e);
	return 0;
}

static void close_collector(struct mr_collector *c)
{
	for (unsigned s = 0; s < c->nfd; s++)
		close(c->fds[s]);
	c->nfd = 0;
	c->fd = -1;
	c->nb = 0;
	c->connected = 0;
	c->st.hold_ms = 0;
	c->backoff_ms = 0;
}

void mr_encap__close(struct mr_encap *e)
{
	for (unsigned i = 0; i < e->n; i++)
		close_collector(&e->c[i]);
}

/* ------------------------------------------------------------------ hot path */

static void count_drop(struct mr_encap *e, struct mr_collector *c, int en)
{
	struct mr_drain_stats *st = e->st;
	if (en == EAGAIN || en == EWOULDBLOCK || en == ENOBUFS) {
		c->st.drop_busy++;
		st->drop_busy++;
		return;
	}
	if (unreachable(en))
		c->st.drop_unreachable++;
	else
		c->st.drop_error++;
	c->st.last_errno = en;
	st->drop_error++;
	st->last_errno = en;
}

/* Send msgs[0..n) on fd (ord[j]: the batch slot of msgs[j]), dropping and counting each copy
 * the kernel refuses; returns the errno of the last refusal (0: none). */
static int send_run(struct mr_encap *e, struct mr_collector *c, int fd, struct mmsghdr *msgs,
		    const uint8_t *ord, unsigned n)
{
	unsigned i = 0, udphdr = e->ports ? 8 : 0; /* bytes count the UDP header the kernel wrote */
	int last = 0;
	while (i < n) {
		int r = sendmmsg(fd, msgs + i, n - i, MSG_DONTWAIT);
		if (r > 0) {
			uint64_t now = mr_lat__now(); /* accepted by the kernel: delivered, as drain.c counts */
			for (unsigned j = i; j < i + (unsigned)r; j++) {
				uint8_t t = c->rec_trunc[ord ? ord[j] : j];
				mr_lat__note(e->st, now, c->rec_ts[ord ? ord[j] : j]);
				c->st.bytes += msgs[j].msg_len + udphdr;
				e->st->bytes += msgs[j].msg_len + udphdr;
				e->st->truncated += t & 1;
				c->st.truncated_mtu += t >> 1;
			}
			c->st.pkts += (unsigned)r;
			e->st->pkts += (unsigned)r;
			i += (unsigned)r;
		} else if (r < 0 && errno == EINTR) {
			continue;
		} else {
			last = r < 0 ? errno : EIO;
			count_drop(e, c, last); /* this one failed: drop it, go on */
			i++;
		}
	}
	return last;
}

static void flush_one(struct mr_encap *e, struct mr_collector *c)
{
	unsigned n = c->nb;
	int remtu = 0, refused = 0;
	c->nb = 0;
	if (!e->ports) {
		remtu = send_run(e, c, c->fd, c->msgs, NULL, n) == EMSGSIZE;
	} else {
		/* one sendmmsg per socket that has copies: a stable counting sort of the batch by
		 * socket (each flow's copies keep their order) into msgs grouped per socket */
		struct mmsghdr out[MR_ENCAP_BATCH];
		uint8_t ord[MR_ENCAP_BATCH], start[MR_ENCAP_MAX_PORTS + 1];
		memset(start, 0, e->ports + 1);
		for (unsigned k = 0; k < n; k++)
			start[c->sock[k] + 1]++;
		for (unsigned s = 0; s < e->ports; s++)
			start[s + 1] = (uint8_t)(start[s + 1] + start[s]);
		for (unsigned k = 0; k < n; k++) {
			unsigned pos = start[c->sock[k]]++;
			out[pos].msg_hdr = c->msgs[k].msg_hdr;
			ord[pos] = (uint8_t)k;
		}
		/* start[s] is now where socket s's copies end */
		for (unsigned s = 0, from = 0; s < e->ports; from = start[s++]) {
			if (start[s] == from)
				continue;
			int en = send_run(e, c, c->fds[s], out + from, ord + from, start[s] - from);
			remtu |= en == EMSGSIZE;
			/* a connected UDP socket reports an ICMP port unreachable on a send (the
			 * first of a sendmmsg call): nobody listens there, hold it down now */
			refused |= en == ECONNREFUSED;
		}
	}
	if (refused && !c->st.hold_ms)
		hold_down(e, c, now_ns());
	if (remtu) /* the path MTU shrank under us: learn it now, not in a second */
		refresh_one(e, c, now_ns());
}

void mr_encap__flush(struct mr_encap *e)
{
	for (unsigned i = 0; i < e->n; i++)
		if (e->c[i].nb)
			flush_one(e, &e->c[i]);
}

void mr_encap__push(struct mr_encap *e, const struct mr_frame *f, struct mr_drain_stats *st)
{
	if (e->st != st) { /* another route's copies may wait: they are counted there */
		if (e->st)
			mr_encap__flush(e);
		e->st = st;
	}
	int udp = e->cfg.kind <= MR_ENCAP_GENEVE;
	uint32_t h = (udp || e->cfg.spread) ? mr_flow__hash(f->data, f->cap_len) : 0;
	unsigned ci = e->cfg.spread && e->n > 1 ? mr_encap__pick(e, h) : 0;
	struct mr_collector *c = &e->c[ci];
	if (c->fd < 0) { /* (closed: the route's fd is -1 first, so only a caller's mistake) */
		st->drop_no_output++;
		return;
	}
	if (c->st.hold_ms) { /* held down after an ICMP unreachable: dropped, counted, not sent */
		c->st.drop_unreachable++;
		st->drop_error++;
		st->last_errno = c->st.last_errno;
		c->gre_seq += !udp; /* ERSPAN: the collector sees the gap, as for a failed send */
		if (now_ns() >= e->refresh_at) { /* the hold may be over: probe */
			mr_encap__flush(e);
			mr_encap__refresh(e);
		}
		return;
	}
	uint32_t len = f->cap_len;
	int tmtu = 0;
	if (c->st.mtu) {
		uint32_t room = c->st.mtu - (c->family == AF_INET ? e->overhead4 : e->overhead6);
		if (c->st.mtu <= (c->family == AF_INET ? e->overhead4 : e->overhead6) + MIN_INNER)
			room = MIN_INNER; /* a silly MTU: the send will say EMSGSIZE, counted */
		if (len > room) {
			len = room;
			tmtu = 1;
		}
	}
	int trunc = tmtu || (f->flags & MR_REC_F_TRUNCATED);
	unsigned k = c->nb;
	uint8_t *p = c->hdr[k];
	if (udp) {
		/* the flow's socket, so its source port (RFC 7348: a hash of the inner flow); the
		 * header is the template, set in the slot at open */
		c->sock[k] = (uint8_t)(((uint64_t)h * e->ports) >> 32);
	} else {
		uint16_t et = f->cap_len >= 14 ? (uint16_t)(f->data[12] << 8 | f->data[13]) : 0;
		uint32_t en = (et == 0x8100 || et == 0x88a8 || et == 0x9100) ? 3u : 0u; /* tags kept in the frame */
		put16(p, GRE_F_SEQ);
		put32(p + 4, c->gre_seq++); /* taken even if the send fails: the collector sees the gap */
		if (e->cfg.kind == MR_ENCAP_ERSPAN2) {
			put16(p + 2, GRE_P_ERSPAN2);
			put32(p + 8, 1u << 28 | en << 11 | (uint32_t)trunc << 10 | e->cfg.session_id);
			put32(p + 12, f->ifindex & 0xFFFFFu); /* index: the ingress interface */
		} else {
			put16(p + 2, GRE_P_ERSPAN3);
			put32(p + 8, 2u << 28 | (uint32_t)trunc << 10 | e->cfg.session_id);
			put32(p + 12, (uint32_t)(f->ts_ns / 100)); /* the ring record's time, 100 ns units */
			put32(p + 16, ERSPAN_GRA_100NS << 1);       /* SGT 0, P 0, FT 0 (Ethernet), D 0 */
		}
	}
	/* msg_hdr, iov[k][0] and the destination are set once per slot (open_one, refresh_one) */
	c->iov[k][1].iov_base = (void *)f->data;
	c->iov[k][1].iov_len = len;
	/* bit 0: max_packet_length cut it (the route's truncated); bit 1: the path MTU did */
	c->rec_trunc[k] = (uint8_t)(((f->flags & MR_REC_F_TRUNCATED) != 0) | tmtu << 1);
	c->rec_ts[k] = f->ts_ns;
	if (++c->nb == MR_ENCAP_BATCH)
		flush_one(e, c);
	if (k == 0 && now_ns() >= e->refresh_at) { /* once a second, at the start of a batch */
		mr_encap__flush(e);
		mr_encap__refresh(e);
	}
}
