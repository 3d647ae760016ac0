/* SPDX-License-Identifier: MIT */
/* The AF_XDP forwarder with mirroring; see include/mirrord/forward.h.  Long because it
 * holds the whole reference dataplane: its own XDP program and link, UMEM and sockets,
 * multi-buffer packets and kernel statistics.  The mirroring is the embeddable tap's
 * (tap.c, include/mirrord/tap.h): one struct mr_tap per binding, offered each RX batch. */
#define _GNU_SOURCE
#include "mirrord/forward.h"
#include "mirrord/ring.h"
#include "mirrord/tap.h"
#include "util.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <linux/bpf.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <xdp/libxdp.h>
#include <xdp/xsk.h>

/* Debian 12's linux-libc-dev (6.1) predates AF_XDP multi-buffer (6.6); the values are ABI. */
#ifndef XDP_USE_SG
#define XDP_USE_SG (1 << 4)          /* bind: packets may span several descriptors */
#endif
#ifndef XDP_PKT_CONTD
#define XDP_PKT_CONTD (1 << 0)       /* xdp_desc.options: the packet continues in the next one */
#endif
#ifndef BPF_F_XDP_HAS_FRAGS
#define BPF_F_XDP_HAS_FRAGS (1U << 5) /* prog load: the program accepts multi-buffer xdp_buffs */
#endif

#define NFRAMES 4096u                       /* UMEM frames per port */
#define FRAME_SIZE XSK_UMEM__DEFAULT_FRAME_SIZE
#define RX_FRAMES (NFRAMES / 2)             /* half for the fill ring, half for TX */
#define BATCH 64u
#define RING_SIZE 2048u
/* The kernel chains at most MAX_SKB_FRAGS + 1 descriptors per packet (17 + 1 by default,
 * 45 + 1 at most), so the descriptors of one packet always fit in one peek of BATCH. */
#define MAX_DESCS_PER_PKT 46u
_Static_assert(BATCH >= MAX_DESCS_PER_PKT, "a whole packet fits in one RX peek");
#define XSKMAP_ENTRIES 1024u                /* queues a port may be bound to: 0..1023 */

/* One AF_XDP socket with its own UMEM.  Frames are split in two pools owned by the
 * pair's worker: rx_free (to refill the fill ring) and tx_free (to copy frames into for
 * transmission).  A completed TX frame returns to tx_free. */
struct xdp_attach;

struct port {
	char ifname[IF_NAMESIZE];
	int ifindex;
	uint32_t queue;
	struct xdp_attach *att;  /* the XDP program redirecting this interface to its sockets */
	int tx_down;             /* the last kick said the egress link is gone or down */
	void *buf;
	struct xsk_umem *umem;
	struct xsk_ring_prod fq, tx;
	struct xsk_ring_cons cq, rx;
	struct xsk_socket *xsk;
	uint64_t rx_free[RX_FRAMES], tx_free[NFRAMES - RX_FRAMES];
	uint32_t n_rx_free, n_tx_free;
	uint32_t tx_outstanding;
};

/* The worker's counters of struct mr_binding_counters (the mirror_* ones are the tap's,
 * the xdp_* ones the kernel's). */
#define WORKER_COUNTERS(X) \
	X(rx_packets) X(rx_bytes) X(tx_packets) X(tx_bytes) X(dropped_tx_full) X(dropped_tx_down)

/* Written by the pair's worker only, read by anyone (mr_fwd__counters): relaxed both ways,
 * statistics that order nothing else.  One writer, so an add is a relaxed load and store,
 * not a locked read-modify-write. */
struct worker_counters {
#define DECLARE(name) _Atomic uint64_t name;
	WORKER_COUNTERS(DECLARE)
#undef DECLARE
};
/* every counter of mr_binding_counters is the worker's, one of the tap's eight mirror_* or
 * one of the kernel's six xdp_* */
_Static_assert(sizeof(struct worker_counters) + 14 * sizeof(uint64_t) == sizeof(struct mr_binding_counters),
	       "a counter of struct mr_binding_counters is missing from WORKER_COUNTERS");

#define CADD(b, field, n)                                                                        \
	atomic_store_explicit(&(b)->c.field,                                                     \
			      atomic_load_explicit(&(b)->c.field, memory_order_relaxed) + (n),   \
			      memory_order_relaxed)

/* One direction of a pair: frames received on `in` leave through `out`. */
struct binding {
	struct port *in, *out;
	struct mr_tap *tap;     /* on the binding's ring (mr_fwd__set_ring), or without one */
	int has_ring;
	struct mr_tap_vlan_rule *table; /* the last table set before start, for mr_fwd__set_ring */
	uint32_t ntable;                /* (one block: the rules, then their filters; freed in destroy) */
	struct worker_counters c;
};

struct pair {
	struct port p[2];
	struct binding b[2];
	pthread_t thread;
	int running;
};

/* Our XDP program on one interface, shared by the ports bound to its queues. */
struct xdp_attach {
	int ifindex;
	uint32_t mode;   /* XDP_FLAGS_SKB_MODE or XDP_FLAGS_DRV_MODE */
	int map_fd;      /* XSKMAP: rx_queue_index -> socket */
	int prog_fd;
	int link_fd;     /* bpf_link: the kernel detaches when the last fd closes, crash or not */
	int netlink;     /* attached by netlink instead (kernel without XDP links): detach by hand */
	unsigned refs;
};

struct mr_fwd {
	struct pair pairs[MR_FWD_MAX_PAIRS];
	struct xdp_attach att[2 * MR_FWD_MAX_PAIRS];
	unsigned npairs;
	_Atomic int stop;
	int started;
};

int mr_fwd__create(struct mr_fwd **out)
{
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

/*
 * libbpf and libxdp say why a call failed on their print callback (the kernel's extack
 * message, "Peer MTU is too large to set XDP", arrives there), not in the return code.
 * During setup we keep the last warning line so the error names the reason.  The print
 * functions are process-wide: setup runs on one thread (the caller of mr_fwd__add_pair),
 * the workers never call into libbpf.
 */
static char lib_msg[192];

static int keep_warning(int is_warn, const char *fmt, va_list ap)
{
	char line[sizeof(lib_msg)];
	if (!is_warn)
		return 0;
	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\n")] = 0;
	const char *m = line;
	static const char *const prefixes[] = {"libbpf: ", "libxdp: ", "Kernel error message: "};
	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
		if (!strncmp(m, prefixes[i], strlen(prefixes[i])))
			m += strlen(prefixes[i]);
	if (*m)
		snprintf(lib_msg, sizeof(lib_msg), "%s", m);
	return 0;
}

static int keep_libbpf(enum libbpf_print_level l, const char *fmt, va_list ap)
{
	return keep_warning(l == LIBBPF_WARN, fmt, ap);
}

static int keep_libxdp(enum libxdp_print_level l, const char *fmt, va_list ap)
{
	return keep_warning(l == LIBXDP_WARN, fmt, ap);
}

/* "<what>: <strerror>[: <the library's last warning>]" */
static int fail_lib(char *err, size_t errlen, int rc, const char *ifname, const char *what)
{
	if (lib_msg[0])
		return fail(err, errlen, rc, "interface %s: %s: %s: %s", ifname, what, strerror(-rc), lib_msg);
	return fail(err, errlen, rc, "interface %s: %s: %s", ifname, what, strerror(-rc));
}

/*
 * The XDP program, as the old libbpf xsk.c loaded it (kernel >= 5.3):
 *
 *     return bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_PASS);
 *
 * A queue with a socket in the map goes to it; any other frame goes on to the stack.
 * Loaded with BPF_F_XDP_HAS_FRAGS so that multi-buffer frames (jumbo) reach it whole.
 */
static int load_redirect_prog(int map_fd, char *log, size_t loglen)
{
	struct bpf_insn insns[] = {
		/* r2 = ((struct xdp_md *)r1)->rx_queue_index */
		{.code = BPF_LDX | BPF_MEM | BPF_W, .dst_reg = BPF_REG_2, .src_reg = BPF_REG_1,
		 .off = offsetof(struct xdp_md, rx_queue_index)},
		/* r1 = the XSKMAP (a 16-byte load of the map's fd, resolved by the verifier) */
		{.code = BPF_LD | BPF_DW | BPF_IMM, .dst_reg = BPF_REG_1, .src_reg = BPF_PSEUDO_MAP_FD,
		 .imm = map_fd},
		{0},
		/* r3 = XDP_PASS: the action when the map has no socket for this queue */
		{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_3, .imm = XDP_PASS},
		{.code = BPF_JMP | BPF_CALL, .imm = BPF_FUNC_redirect_map},
		{.code = BPF_JMP | BPF_EXIT},
	};
	LIBBPF_OPTS(bpf_prog_load_opts, o, .prog_flags = BPF_F_XDP_HAS_FRAGS,
		    .expected_attach_type = BPF_XDP, .log_buf = log, .log_size = (uint32_t)loglen,
		    .log_level = 0);
	int fd = bpf_prog_load(BPF_PROG_TYPE_XDP, "mirrord_xsk", "Dual MIT/GPL", insns,
			       sizeof(insns) / sizeof(insns[0]), &o);
	return fd < 0 ? -errno : fd;
}

static void attach_put(struct xdp_attach *a)
{
	if (!a || --a->refs)
		return;
	if (a->link_fd >= 0)
		close(a->link_fd); /* the last reference to the link: the kernel detaches */
	if (a->netlink) {
		/* detach only our program: XDP_FLAGS_REPLACE with its fd refuses any other */
		LIBBPF_OPTS(bpf_xdp_attach_opts, o, .old_prog_fd = a->prog_fd);
		bpf_xdp_detach(a->ifindex, a->mode | XDP_FLAGS_REPLACE, &o);
	}
	if (a->prog_fd >= 0)
		close(a->prog_fd);
	if (a->map_fd >= 0)
		close(a->map_fd);
	memset(a, 0, sizeof(*a));
}

/* Our program on `ifindex` in `mode`: the one already attached by this forwarder, or a new
 * one (map, program, link).  Never replaces a program someone else attached. */
static int attach_get(struct mr_fwd *f, struct port *p, uint32_t mode, char *err, size_t errlen)
{
	struct xdp_attach *a = NULL;
	for (size_t i = 0; i < sizeof(f->att) / sizeof(f->att[0]); i++) {
		if (f->att[i].refs && f->att[i].ifindex == p->ifindex) {
			if (f->att[i].mode != mode)
				return fail(err, errlen, -EINVAL, "interface %s: already served in another XDP mode",
					    p->ifname);
			f->att[i].refs++;
			p->att = &f->att[i];
			return 0;
		}
		if (!a && !f->att[i].refs)
			a = &f->att[i];
	}
	if (!a)
		return fail(err, errlen, -ENOSPC, "interface %s: too many interfaces", p->ifname);
	*a = (struct xdp_attach){.ifindex = p->ifindex, .mode = mode, .map_fd = -1, .prog_fd = -1,
				 .link_fd = -1, .refs = 1};
	const char *how = mode == XDP_FLAGS_SKB_MODE ? "generic" : "native";
	char what[64], log[512] = "";
	int r;

	a->map_fd = bpf_map_create(BPF_MAP_TYPE_XSKMAP, "mirrord_xsks", sizeof(uint32_t), sizeof(int),
				   XSKMAP_ENTRIES, NULL);
	if (a->map_fd < 0) {
		r = -errno;
		attach_put(a);
		return fail_lib(err, errlen, r, p->ifname, "create the XSKMAP (needs CAP_BPF and CAP_NET_ADMIN)");
	}
	a->prog_fd = load_redirect_prog(a->map_fd, log, sizeof(log));
	if (a->prog_fd < 0) {
		r = a->prog_fd;
		attach_put(a);
		log[strcspn(log, "\n")] = 0;
		if (log[0])
			snprintf(lib_msg, sizeof(lib_msg), "verifier: %s", log);
		return fail_lib(err, errlen, r, p->ifname, "load the XDP program (needs CAP_BPF and CAP_NET_ADMIN)");
	}
	LIBBPF_OPTS(bpf_link_create_opts, lo, .flags = mode);
	a->link_fd = bpf_link_create(a->prog_fd, p->ifindex, BPF_XDP, &lo);
	if (a->link_fd >= 0) {
		p->att = a;
		return 0;
	}
	/* The link API returns only an errno; the kernel's reason (extack) comes back on
	 * netlink, which a kernel without XDP links also needs.  UPDATE_IF_NOEXIST: never
	 * replace a program that is there. */
	r = -errno;
	lib_msg[0] = 0;
	int r2 = bpf_xdp_attach(p->ifindex, a->prog_fd, mode | XDP_FLAGS_UPDATE_IF_NOEXIST, NULL);
	if (r2 == 0) {
		a->netlink = 1;
		p->att = a;
		return 0;
	}
	snprintf(what, sizeof(what), "attach XDP (%s)", how);
	attach_put(a);
	return fail_lib(err, errlen, r2 ? r2 : r, p->ifname, what);
}

static int port_open(struct mr_fwd *f, struct port *p, const char *ifname, uint32_t queue, int skb_mode,
		     char *err, size_t errlen)
{
	size_t sz = (size_t)NFRAMES * FRAME_SIZE;
	int r;

	snprintf(p->ifname, sizeof(p->ifname), "%s", ifname);
	p->queue = queue;
	if (queue >= XSKMAP_ENTRIES)
		return fail(err, errlen, -EINVAL, "interface %s: queue %u: at most %u", ifname, queue,
			    XSKMAP_ENTRIES - 1);
	p->ifindex = (int)if_nametoindex(ifname);
	if (!p->ifindex)
		return fail(err, errlen, -ENODEV, "interface %s: no such interface", ifname);
	p->buf = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (p->buf == MAP_FAILED) {
		p->buf = NULL;
		return fail(err, errlen, -errno, "interface %s: UMEM mmap: %s", ifname, strerror(errno));
	}
	struct xsk_umem_config ucfg = {
		.fill_size = RING_SIZE, .comp_size = RING_SIZE,
		.frame_size = FRAME_SIZE, .frame_headroom = 0,
	};
	r = xsk_umem__create(&p->umem, p->buf, sz, &p->fq, &p->cq, &ucfg);
	if (r == -EPERM)
		return fail(err, errlen, r, "interface %s: AF_XDP socket: %s (needs CAP_NET_RAW)", ifname,
			    strerror(-r));
	if (r == -ENOBUFS) /* the kernel charges the UMEM to RLIMIT_MEMLOCK unless CAP_IPC_LOCK */
		return fail(err, errlen, r, "interface %s: register the %zu MiB UMEM: %s (needs CAP_IPC_LOCK "
			    "or RLIMIT_MEMLOCK above %zu MiB per port)", ifname, sz >> 20, strerror(-r), sz >> 20);
	if (r)
		return fail(err, errlen, r, "interface %s: xsk_umem__create: %s", ifname, strerror(-r));
	/* We load and attach the program ourselves (attach_get): libxdp's own needs
	 * BPF_PROG_GET_FD_BY_ID, i.e. CAP_SYS_ADMIN, and would outlive a failed start. */
	struct xsk_socket_config cfg = {
		.rx_size = RING_SIZE, .tx_size = RING_SIZE,
		.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
		.bind_flags = XDP_USE_NEED_WAKEUP | XDP_USE_SG | (skb_mode ? XDP_COPY : 0),
	};
	r = xsk_socket__create(&p->xsk, ifname, queue, p->umem, &p->rx, &p->tx, &cfg);
	if (r == -EBUSY)
		return fail(err, errlen, r, "interface %s queue %u: another AF_XDP socket is bound to this queue "
			    "(another forwarder?)", ifname, queue);
	if (r == -EINVAL)
		return fail_lib(err, errlen, r, ifname, "bind the AF_XDP socket (a queue the device does not have, "
				"or a kernel before 6.6 without AF_XDP multi-buffer)");
	if (r)
		return fail_lib(err, errlen, r, ifname, "xsk_socket__create");
	r = attach_get(f, p, skb_mode ? XDP_FLAGS_SKB_MODE : XDP_FLAGS_DRV_MODE, err, errlen);
	if (r)
		return r;
	r = xsk_socket__update_xskmap(p->xsk, p->att->map_fd);
	if (r)
		return fail_lib(err, errlen, r, ifname, "insert the socket into the XSKMAP");
	for (uint32_t i = 0; i < RX_FRAMES; i++)
		p->rx_free[p->n_rx_free++] = (uint64_t)i * FRAME_SIZE;
	for (uint32_t i = RX_FRAMES; i < NFRAMES; i++)
		p->tx_free[p->n_tx_free++] = (uint64_t)i * FRAME_SIZE;
	uint32_t idx, n = p->n_rx_free;
	if (xsk_ring_prod__reserve(&p->fq, n, &idx) != n)
		return fail(err, errlen, -ENOSPC, "interface %s: fill ring too small", ifname);
	for (uint32_t i = 0; i < n; i++)
		*xsk_ring_prod__fill_addr(&p->fq, idx + i) = p->rx_free[--p->n_rx_free];
	xsk_ring_prod__submit(&p->fq, n);
	return 0;
}

/* Undo port_open, whatever step it reached: the socket leaves the map with its fd, our
 * program leaves the interface with the last port that used it. */
static void port_close(struct port *p)
{
	if (p->xsk)
		xsk_socket__delete(p->xsk);
	attach_put(p->att);
	if (p->umem)
		xsk_umem__delete(p->umem);
	if (p->buf)
		munmap(p->buf, (size_t)NFRAMES * FRAME_SIZE);
	memset(p, 0, sizeof(*p));
}

int mr_fwd__add_pair(struct mr_fwd *f, const char *a, const char *b, uint32_t queue, int skb_mode,
		     char *err, size_t errlen)
{
	if (f->started)
		return fail(err, errlen, -EBUSY, "pairs must be added before the forwarder starts");
	if (f->npairs == MR_FWD_MAX_PAIRS)
		return fail(err, errlen, -ENOSPC, "at most %d pairs", MR_FWD_MAX_PAIRS);
	struct pair *pr = &f->pairs[f->npairs];
	memset(pr, 0, sizeof(*pr));
	lib_msg[0] = 0;
	libbpf_print_fn_t old_bpf = libbpf_set_print(keep_libbpf);
	libxdp_print_fn_t old_xdp = libxdp_set_print(keep_libxdp);
	int r = port_open(f, &pr->p[0], a, queue, skb_mode, err, errlen);
	if (!r)
		r = port_open(f, &pr->p[1], b, queue, skb_mode, err, errlen);
	libbpf_set_print(old_bpf);
	libxdp_set_print(old_xdp);
	if (r) {
		port_close(&pr->p[0]);
		port_close(&pr->p[1]);
		return r;
	}
	for (int i = 0; i < 2; i++) {
		pr->b[i].in = &pr->p[i];
		pr->b[i].out = &pr->p[1 - i];
		/* no ring until mr_fwd__set_ring gives it one: copies count as no_ring */
		if (mr_tap__create_no_ring(&pr->b[i].tap)) {
			mr_tap__destroy(pr->b[0].tap);
			pr->b[0].tap = NULL;
			port_close(&pr->p[0]);
			port_close(&pr->p[1]);
			return fail(err, errlen, -ENOMEM, "out of memory");
		}
	}
	return (int)f->npairs++;
}

static struct binding *binding_of(struct mr_fwd *f, unsigned i)
{
	return i / 2 < f->npairs ? &f->pairs[i / 2].b[i % 2] : NULL;
}

int mr_fwd__set_ring(struct mr_fwd *f, unsigned i, const char *path, uint32_t data_size,
		     const char *name, char *err, size_t errlen)
{
	struct binding *b = binding_of(f, i);
	if (!b)
		return fail(err, errlen, -EINVAL, "no binding %u", i);
	if (f->started || b->has_ring)
		return fail(err, errlen, -EBUSY, "binding %u: the ring is set once, before start", i);
	struct mr_tap *t;
	int r = mr_tap__create(&t, path, data_size, name, err, errlen);
	if (r)
		return r;
	/* before start: no worker reads b->tap yet; a table set before the ring moves over */
	if (b->table)
		mr_tap__set_rules(t, b->table, b->ntable);
	mr_tap__destroy(b->tap);
	b->tap = t;
	b->has_ring = 1;
	return 0;
}

int mr_fwd__set_mirror(struct mr_fwd *f, unsigned i, const struct mr_mirror_cfg *cfg)
{
	if (!cfg)
		return -EINVAL;
	struct mr_mirror_cfg d = *cfg;
	d.vid = 0;
	return mr_fwd__set_mirrors(f, i, &d, 1);
}

int mr_fwd__set_mirrors(struct mr_fwd *f, unsigned i, const struct mr_mirror_cfg *cfgs, unsigned n)
{
	struct binding *b = binding_of(f, i);
	if (!b || n > 1 + MR_TAP_MAX_VLAN_RULES || (n && !cfgs))
		return -EINVAL;
	struct mr_tap_vlan_rule rules[1 + MR_TAP_MAX_VLAN_RULES];
	size_t insns = 0;
	for (unsigned j = 0; j < n; j++) {
		const struct mr_mirror_cfg *c = &cfgs[j];
		uint32_t nf = c->filter ? c->filter_len : 0;
		rules[j] = (struct mr_tap_vlan_rule){
			.vid = c->vid, .flags = c->flags, .filter = c->filter, .filter_len = nf,
			.rule = {.session_id = c->session_id, .rate = c->rate, .run_length = c->run_length,
				 .max_len = c->max_len}};
		insns += nf;
	}
	/* the tap's lock-free swap and grace period (tap.c) */
	int rc = mr_tap__set_rules(b->tap, rules, n);
	if (!rc && !f->started) { /* kept for a ring given later (mr_fwd__set_ring) */
		size_t head = (size_t)n * sizeof(rules[0]);
		struct mr_tap_vlan_rule *p = malloc(head + insns * sizeof(struct mr_tap_insn) + 1);
		if (!p)
			return -ENOMEM;
		struct mr_tap_insn *prog = (struct mr_tap_insn *)((char *)p + head);
		for (unsigned j = 0; j < n; j++) {
			p[j] = rules[j];
			if (rules[j].filter_len) {
				memcpy(prog, rules[j].filter, rules[j].filter_len * sizeof(*prog));
				p[j].filter = prog;
				prog += rules[j].filter_len;
			}
		}
		free(b->table);
		b->table = p;
		b->ntable = n;
	}
	return rc;
}

int mr_fwd__rule_counters(const struct mr_fwd *f, unsigned i, struct mr_tap_rule_counters *out, unsigned max)
{
	const struct binding *b = binding_of((struct mr_fwd *)f, i);
	if (!b)
		return -EINVAL;
	return mr_tap__rule_counters(b->tap, out, max);
}

/* Wake the kernel's TX of `out` (copy mode transmits in sendto).  ENXIO: the socket lost
 * its device (the interface was deleted); ENETDOWN: the device is down.  Either way
 * nothing we put in the TX ring will leave, so the caller counts drops as tx_down. */
static void tx_kick(struct port *out)
{
	if (sendto(xsk_socket__fd(out->xsk), NULL, 0, MSG_DONTWAIT, NULL, 0) >= 0)
		out->tx_down = 0;
	else if (errno == ENXIO || errno == ENETDOWN)
		out->tx_down = 1;
	else
		out->tx_down = 0; /* EAGAIN, EBUSY, ENOBUFS: busy, not gone */
}

/* A packet in the RX ring: descriptors first .. first + ndesc - 1, chained by XDP_PKT_CONTD. */
struct pkt {
	uint32_t first, ndesc, len;
	int fwd;
};

/* Move up to BATCH descriptors' worth of whole packets from b->in's RX to b->out's TX,
 * then offer them all to the binding's tap (once per batch, even an empty one: that is
 * where the tap takes up a new rule).  A packet is forwarded whole or not at all, and a
 * packet whose last descriptor has not arrived stays in the RX ring for the next call. */
static unsigned forward_batch(struct binding *b, uint64_t now_ns)
{
	struct port *in = b->in, *out = b->out;
	struct pkt pk[BATCH];
	uint32_t ri, ti = 0, n, i, np = 0;

	/* TX completions of `out` (sent by this same worker) back to its TX pool */
	n = xsk_ring_cons__peek(&out->cq, BATCH, &ri);
	for (i = 0; i < n; i++)
		out->tx_free[out->n_tx_free++] = *xsk_ring_cons__comp_addr(&out->cq, ri + i);
	xsk_ring_cons__release(&out->cq, n);
	out->tx_outstanding -= n;

	n = xsk_ring_cons__peek(&in->rx, BATCH, &ri);
	if (!n) {
		if (xsk_ring_prod__needs_wakeup(&in->fq))
			recvfrom(xsk_socket__fd(in->xsk), NULL, 0, MSG_DONTWAIT, NULL, NULL);
		if (out->tx_outstanding && xsk_ring_prod__needs_wakeup(&out->tx))
			tx_kick(out);
		mr_tap__offer_burst(b->tap, NULL, 0, (uint32_t)in->ifindex, now_ns);
		return 0;
	}
	/* cut the descriptors into packets; give back a trailing incomplete one */
	uint32_t first = 0, len = 0;
	for (i = 0; i < n; i++) {
		const struct xdp_desc *d = xsk_ring_cons__rx_desc(&in->rx, ri + i);
		len += d->len;
		if (!(d->options & XDP_PKT_CONTD)) {
			pk[np++] = (struct pkt){.first = first, .ndesc = i + 1 - first, .len = len};
			first = i + 1;
			len = 0;
		}
	}
	if (first < n) {
		xsk_ring_cons__cancel(&in->rx, n - first);
		n = first;
	}
	if (!np) {
		mr_tap__offer_burst(b->tap, NULL, 0, (uint32_t)in->ifindex, now_ns);
		return 0;
	}

	/* forwarding room, in descriptors: TX ring slots and UMEM frames of `out`.  Whole
	 * packets in arrival order while it lasts; the rest is dropped and counted. */
	uint64_t down = 0, full = 0, fwd = 0, tx_bytes = 0;
	uint32_t room = 0, need = 0;
	if (out->tx_down)
		tx_kick(out); /* still gone? (a link set up again comes back) */
	if (!out->tx_down) {
		room = xsk_prod_nb_free(&out->tx, n);
		if (room > out->n_tx_free)
			room = out->n_tx_free;
	}
	for (i = 0; i < np; i++) {
		pk[i].fwd = !out->tx_down && need + pk[i].ndesc <= room;
		if (pk[i].fwd) {
			need += pk[i].ndesc;
			fwd++;
			tx_bytes += pk[i].len;
		} else if (out->tx_down) {
			down++;
		} else {
			full++;
		}
	}
	if (need && xsk_ring_prod__reserve(&out->tx, need, &ti) != need) {
		/* cannot happen: xsk_prod_nb_free() said there was room and only we produce */
		for (i = 0; i < np; i++)
			pk[i].fwd = 0;
		full += fwd;
		fwd = tx_bytes = need = 0;
	}

	uint64_t bytes = 0;
	struct mr_tap_frag frags[BATCH];  /* the RX descriptors as the tap sees them */
	struct mr_tap_frame frames[BATCH];
	uint32_t t = 0; /* next TX descriptor */
	for (uint32_t p = 0; p < np; p++) {
		const struct pkt *k = &pk[p];
		bytes += k->len;
		for (i = 0; i < k->ndesc; i++) {
			const struct xdp_desc *d = xsk_ring_cons__rx_desc(&in->rx, ri + k->first + i);
			frags[k->first + i] = (struct mr_tap_frag){.data = xsk_umem__get_data(in->buf, d->addr),
								   .len = d->len};
			if (k->fwd) { /* each fragment into a TX frame of the other port */
				uint64_t fa = out->tx_free[--out->n_tx_free];
				memcpy((uint8_t *)out->buf + fa, frags[k->first + i].data, d->len);
				struct xdp_desc *td = xsk_ring_prod__tx_desc(&out->tx, ti + t++);
				td->addr = fa;
				td->len = d->len;
				td->options = i + 1 < k->ndesc ? XDP_PKT_CONTD : 0;
			}
		}
		frames[p] = (struct mr_tap_frame){.frags = &frags[k->first], .nfrags = k->ndesc};
	}
	/* then the mirror copies, after the forwarding decision and while the RX frames are
	 * still ours (before they go back to the fill ring): one call, one ring submit */
	mr_tap__offer_burst(b->tap, frames, np, (uint32_t)in->ifindex, now_ns);
	/* every consumed RX frame goes back to the fill pool, forwarded or not */
	for (i = 0; i < n; i++)
		in->rx_free[in->n_rx_free++] = xsk_umem__extract_addr(xsk_ring_cons__rx_desc(&in->rx, ri + i)->addr);
	xsk_ring_cons__release(&in->rx, n);
	if (need) {
		xsk_ring_prod__submit(&out->tx, need);
		out->tx_outstanding += need;
		if (xsk_ring_prod__needs_wakeup(&out->tx)) {
			tx_kick(out);
			if (out->tx_down) { /* the link went away under this batch: it never left */
				down += fwd;
				fwd = tx_bytes = 0;
			}
		}
	}
	/* refill the fill ring of `in` with what we just consumed */
	uint32_t want = in->n_rx_free;
	if (want && xsk_ring_prod__reserve(&in->fq, want, &ti) == want) {
		for (i = 0; i < want; i++)
			*xsk_ring_prod__fill_addr(&in->fq, ti + i) = in->rx_free[--in->n_rx_free];
		xsk_ring_prod__submit(&in->fq, want);
	}
	CADD(b, rx_packets, np);
	CADD(b, rx_bytes, bytes);
	CADD(b, tx_packets, fwd);
	CADD(b, tx_bytes, tx_bytes);
	CADD(b, dropped_tx_full, full);
	CADD(b, dropped_tx_down, down);
	return n;
}

static uint64_t realtime_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

struct worker_arg {
	struct mr_fwd *f;
	struct pair *pr;
};

static void *worker(void *arg)
{
	struct mr_fwd *f = ((struct worker_arg *)arg)->f;
	struct pair *pr = ((struct worker_arg *)arg)->pr;
	free(arg);
	int idle = 0;

	while (!atomic_load_explicit(&f->stop, memory_order_relaxed)) {
		uint64_t now = realtime_ns();
		unsigned n = forward_batch(&pr->b[0], now) + forward_batch(&pr->b[1], now);
		if (n) {
			idle = 0;
			continue;
		}
		if (++idle < 64)
			continue;
		/* nothing to do: sleep until a socket has frames (need_wakeup mode) */
		struct pollfd pfd[2] = {
			{.fd = xsk_socket__fd(pr->p[0].xsk), .events = POLLIN},
			{.fd = xsk_socket__fd(pr->p[1].xsk), .events = POLLIN},
		};
		poll(pfd, 2, 20);
	}
	return NULL;
}

int mr_fwd__start(struct mr_fwd *f)
{
	if (f->started)
		return -EBUSY;
	/* relaxed: the workers start after this store (pthread_create orders it) */
	atomic_store_explicit(&f->stop, 0, memory_order_relaxed);
	f->started = 1;
	for (unsigned i = 0; i < f->npairs; i++) {
		struct worker_arg *a = malloc(sizeof(*a));
		if (!a)
			return -ENOMEM;
		a->f = f;
		a->pr = &f->pairs[i];
		int r = pthread_create(&f->pairs[i].thread, NULL, worker, a);
		if (r) {
			free(a);
			return -r;
		}
		f->pairs[i].running = 1;
	}
	return 0;
}

void mr_fwd__stop(struct mr_fwd *f)
{
	/* relaxed: a flag the workers poll once per loop; pthread_join below is what orders
	 * their last accesses before ours */
	atomic_store_explicit(&f->stop, 1, memory_order_relaxed);
	for (unsigned i = 0; i < f->npairs; i++)
		if (f->pairs[i].running) {
			pthread_join(f->pairs[i].thread, NULL);
			f->pairs[i].running = 0;
		}
	f->started = 0;
}

void mr_fwd__destroy(struct mr_fwd *f)
{
	if (!f)
		return;
	mr_fwd__stop(f);
	for (unsigned i = 0; i < f->npairs; i++) {
		for (int j = 0; j < 2; j++) {
			struct binding *b = &f->pairs[i].b[j];
			mr_tap__destroy(b->tap); /* the workers are joined (mr_fwd__stop above) */
			free(b->table);
			port_close(&f->pairs[i].p[j]);
		}
	}
	free(f);
}

int mr_fwd__binding_info(const struct mr_fwd *f, unsigned i, int *ifindex, uint32_t *queue)
{
	const struct binding *b = binding_of((struct mr_fwd *)f, i);
	if (!b)
		return -EINVAL;
	*ifindex = b->in->ifindex;
	*queue = b->in->queue;
	return 0;
}

int mr_fwd__ring_fds(const struct mr_fwd *f, unsigned i, int *ring_fd, int *efd)
{
	const struct binding *b = binding_of((struct mr_fwd *)f, i);
	if (!b)
		return -EINVAL;
	return mr_tap__ring_fds(b->tap, ring_fd, efd);
}

int mr_fwd__ring_lost(const struct mr_fwd *f, unsigned i, char *reason, size_t len)
{
	const struct binding *b = binding_of((struct mr_fwd *)f, i);
	if (!b)
		return -EINVAL;
	return mr_tap__ring_lost(b->tap, reason, len);
}

void mr_fwd__counters(const struct mr_fwd *f, unsigned i, struct mr_binding_counters *o)
{
	const struct binding *b = binding_of((struct mr_fwd *)f, i);
	memset(o, 0, sizeof(*o));
	if (!b)
		return;
	/* relaxed: statistics; pairs with nothing (each is a single-writer counter) */
#define LOAD(name) o->name = atomic_load_explicit(&b->c.name, memory_order_relaxed);
	WORKER_COUNTERS(LOAD)
#undef LOAD
	struct mr_tap_counters m;
	mr_tap__counters(b->tap, &m);
	o->mirror_sampled = m.sampled;
	o->mirror_pushed = m.pushed;
	o->mirror_dropped_ring_full = m.dropped_ring_full;
	o->mirror_dropped_no_ring = m.dropped_no_ring;
	o->mirror_dropped_ring_lost = m.dropped_ring_lost;
	o->mirror_table_generation = m.rule_generation;
	o->mirror_filtered = mr_tap__filtered(b->tap);
	o->mirror_skipped_no_listener = mr_tap__skipped_no_listener(b->tap);
	/* the kernel's losses: receive side from the ingress socket, transmit side from the
	 * egress one (each socket is the ingress of one binding and the egress of the other,
	 * so every kernel count appears once) */
	struct xdp_statistics in = {0}, out = {0};
	socklen_t len = sizeof(in);
	if (b->in->xsk)
		getsockopt(xsk_socket__fd(b->in->xsk), SOL_XDP, XDP_STATISTICS, &in, &len);
	len = sizeof(out);
	if (b->out->xsk)
		getsockopt(xsk_socket__fd(b->out->xsk), SOL_XDP, XDP_STATISTICS, &out, &len);
	o->xdp_rx_dropped = in.rx_dropped;
	o->xdp_rx_invalid_descs = in.rx_invalid_descs;
	o->xdp_rx_ring_full = in.rx_ring_full;
	o->xdp_rx_fill_ring_empty_descs = in.rx_fill_ring_empty_descs;
	o->xdp_tx_invalid_descs = out.tx_invalid_descs;
	o->xdp_tx_ring_empty_descs = out.tx_ring_empty_descs;
}
