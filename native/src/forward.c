/* SPDX-License-Identifier: MIT */
/* The AF_XDP forwarder with mirroring; see include/mirrord/forward.h. */
#define _GNU_SOURCE
#include "mirrord/forward.h"
#include "mirrord/ring.h"
#include "util.h"

#include <errno.h>
#include <linux/if_link.h>
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

#define NFRAMES 4096u                       /* UMEM frames per port */
#define FRAME_SIZE XSK_UMEM__DEFAULT_FRAME_SIZE
#define RX_FRAMES (NFRAMES / 2)             /* half for the fill ring, half for TX */
#define BATCH 64u
#define RING_SIZE 2048u

/* One AF_XDP socket with its own UMEM.  Frames are split in two pools owned by the
 * pair's worker: rx_free (to refill the fill ring) and tx_free (to copy frames into for
 * transmission).  A completed TX frame returns to tx_free. */
struct port {
	char ifname[IF_NAMESIZE];
	int ifindex;
	uint32_t queue;
	void *buf;
	struct xsk_umem *umem;
	struct xsk_ring_prod fq, tx;
	struct xsk_ring_cons cq, rx;
	struct xsk_socket *xsk;
	uint64_t rx_free[RX_FRAMES], tx_free[NFRAMES - RX_FRAMES];
	uint32_t n_rx_free, n_tx_free;
	uint32_t tx_outstanding;
};

/* One direction of a pair: frames received on `in` leave through `out`. */
struct binding {
	struct port *in, *out;
	struct mr_prod ring;
	int has_ring;
	_Atomic(struct mr_mirror_cfg *) cfg;
	_Atomic uint64_t gen;   /* bumped by mr_fwd__set_mirror after swapping cfg */
	_Atomic uint64_t seen;  /* the generation the worker copied its table at */
	uint64_t k;             /* sampling counter: frames seen while a session is set */
	uint32_t run_left;
	struct mr_binding_counters c; /* written by the worker only (relaxed), read by anyone */
};

struct pair {
	struct port p[2];
	struct binding b[2];
	pthread_t thread;
	int running;
};

struct mr_fwd {
	struct pair pairs[MR_FWD_MAX_PAIRS];
	unsigned npairs;
	_Atomic int stop;
	int started;
};

#define CADD(b, field, n) __atomic_store_n(&(b)->c.field, (b)->c.field + (n), __ATOMIC_RELAXED)

int mr_fwd__create(struct mr_fwd **out)
{
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

static int port_open(struct port *p, const char *ifname, uint32_t queue, int skb_mode, char *err,
		     size_t errlen)
{
	size_t sz = (size_t)NFRAMES * FRAME_SIZE;
	int r;

	snprintf(p->ifname, sizeof(p->ifname), "%s", ifname);
	p->queue = queue;
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
	if (r)
		return fail(err, errlen, r, "interface %s: xsk_umem__create: %s", ifname, strerror(-r));
	struct xsk_socket_config cfg = {
		.rx_size = RING_SIZE, .tx_size = RING_SIZE,
		.xdp_flags = skb_mode ? XDP_FLAGS_SKB_MODE : XDP_FLAGS_DRV_MODE,
		.bind_flags = XDP_USE_NEED_WAKEUP | (skb_mode ? XDP_COPY : 0),
	};
	r = xsk_socket__create(&p->xsk, ifname, queue, p->umem, &p->rx, &p->tx, &cfg);
	if (r)
		return fail(err, errlen, r, "interface %s queue %u: xsk_socket__create: %s", ifname, queue,
			    strerror(-r));
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

static void port_close(struct port *p)
{
	if (p->xsk)
		xsk_socket__delete(p->xsk);
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
	int r = port_open(&pr->p[0], a, queue, skb_mode, err, errlen);
	if (!r)
		r = port_open(&pr->p[1], b, queue, skb_mode, err, errlen);
	if (r) {
		port_close(&pr->p[0]);
		port_close(&pr->p[1]);
		return r;
	}
	for (int i = 0; i < 2; i++) {
		pr->b[i].in = &pr->p[i];
		pr->b[i].out = &pr->p[1 - i];
		pr->b[i].ring.fd = pr->b[i].ring.efd = -1;
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
	int r = mr_prod__create(&b->ring, path, data_size, 0, name, err, errlen);
	if (r)
		return r;
	b->has_ring = 1;
	return 0;
}

int mr_fwd__set_mirror(struct mr_fwd *f, unsigned i, const struct mr_mirror_cfg *cfg)
{
	struct binding *b = binding_of(f, i);
	if (!b)
		return -EINVAL;
	struct mr_mirror_cfg *n = malloc(sizeof(*n));
	if (!n)
		return -ENOMEM;
	*n = *cfg;
	struct mr_mirror_cfg *old = atomic_exchange(&b->cfg, n);
	uint64_t g = atomic_fetch_add(&b->gen, 1) + 1;
	if (f->started && f->pairs[i / 2].running) {
		/* grace period: the worker copies the table at the top of each loop and then
		 * records the generation it saw; once it saw ours, nobody reads `old` */
		for (int spins = 0; atomic_load(&b->seen) < g && spins < 20000; spins++)
			usleep(50);
		/* a worker stalled for over a second may still be about to read `old`:
		 * leak these few bytes rather than risk a use-after-free on the packet path */
		if (atomic_load(&b->seen) < g)
			return 0;
	}
	free(old);
	return 0;
}

static inline int sample(struct binding *b, const struct mr_mirror_cfg *cfg)
{
	if (b->run_left) {
		b->run_left--;
		b->k++;
		return 1;
	}
	int hit = cfg->rate <= 1 || b->k % cfg->rate == 0;
	b->k++;
	if (hit)
		b->run_left = cfg->run_length;
	return hit;
}

/* Move up to BATCH frames from b->in's RX to b->out's TX, mirroring sampled ones. */
static unsigned forward_batch(struct binding *b, const struct mr_mirror_cfg *cfg, uint64_t now_ns)
{
	struct port *in = b->in, *out = b->out;
	uint32_t ri, ti, n, i;

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
			sendto(xsk_socket__fd(out->xsk), NULL, 0, MSG_DONTWAIT, NULL, 0);
		return 0;
	}
	uint32_t room = n < out->n_tx_free ? n : out->n_tx_free;
	uint32_t got = room ? xsk_ring_prod__reserve(&out->tx, room, &ti) : 0;
	uint64_t bytes = 0, tx_bytes = 0, sampled = 0, pushed = 0, full = 0, noring = 0, lost = 0;
	/* a ring whose file was truncated: once per batch (see mr_prod__lost) */
	int ring_lost = b->has_ring && mr_prod__lost(&b->ring);
	for (i = 0; i < n; i++) {
		const struct xdp_desc *d = xsk_ring_cons__rx_desc(&in->rx, ri + i);
		uint64_t addr = xsk_umem__extract_addr(d->addr);
		const uint8_t *data = xsk_umem__get_data(in->buf, d->addr);
		bytes += d->len;
		if (i < got) { /* forwarding first: copy into a TX frame of the other port */
			uint64_t fa = out->tx_free[--out->n_tx_free];
			memcpy((uint8_t *)out->buf + fa, data, d->len);
			struct xdp_desc *t = xsk_ring_prod__tx_desc(&out->tx, ti + i);
			t->addr = fa;
			t->len = d->len;
			tx_bytes += d->len;
		}
		/* then the mirror copy, while the original bytes are in hand */
		if (cfg && cfg->session_id && sample(b, cfg)) {
			sampled++;
			if (!b->has_ring) {
				noring++;
			} else if (ring_lost) {
				lost++;
			} else {
				uint32_t cap = cfg->max_len && cfg->max_len < d->len ? cfg->max_len : d->len;
				struct mr_rec *r = mr_prod__reserve(&b->ring, cap, d->len);
				if (!r) {
					full++;
				} else {
					r->ifindex = (uint32_t)in->ifindex;
					r->session_id = cfg->session_id;
					r->ts_ns = now_ns;
					memcpy(mr_rec__data(r), data,
					       cap < b->ring.max_frame ? cap : b->ring.max_frame);
					pushed++;
				}
			}
		}
		in->rx_free[in->n_rx_free++] = addr;
	}
	xsk_ring_cons__release(&in->rx, n);
	if (pushed)
		mr_prod__submit(&b->ring);
	if ((pushed || full) && mr_prod__lost(&b->ring)) {
		/* lost during this batch: its copies went to the zero pages that replaced the
		 * mapping (or met their stale indices as "full"); all of them count as lost */
		lost += pushed + full;
		pushed = full = 0;
	}
	if (got) {
		xsk_ring_prod__submit(&out->tx, got);
		out->tx_outstanding += got;
		if (xsk_ring_prod__needs_wakeup(&out->tx))
			sendto(xsk_socket__fd(out->xsk), NULL, 0, MSG_DONTWAIT, NULL, 0);
	}
	/* refill the fill ring of `in` with what we just consumed */
	uint32_t want = in->n_rx_free;
	if (want && xsk_ring_prod__reserve(&in->fq, want, &ti) == want) {
		for (i = 0; i < want; i++)
			*xsk_ring_prod__fill_addr(&in->fq, ti + i) = in->rx_free[--in->n_rx_free];
		xsk_ring_prod__submit(&in->fq, want);
	}
	CADD(b, rx_pkts, n);
	CADD(b, rx_bytes, bytes);
	CADD(b, tx_pkts, got);
	CADD(b, tx_bytes, tx_bytes);
	CADD(b, drop_tx_full, n - got);
	CADD(b, mirror_sampled, sampled);
	CADD(b, mirror_pushed, pushed);
	CADD(b, mirror_drop_ring_full, full);
	CADD(b, mirror_drop_no_ring, noring);
	CADD(b, mirror_drop_ring_lost, lost);
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
	struct mr_mirror_cfg local[2];
	int idle = 0;

	while (!atomic_load_explicit(&f->stop, memory_order_relaxed)) {
		const struct mr_mirror_cfg *cfg[2];
		for (int i = 0; i < 2; i++) {
			struct binding *b = &pr->b[i];
			/* copy the table, then say which generation we copied (see set_mirror) */
			uint64_t g = atomic_load(&b->gen);
			struct mr_mirror_cfg *p = atomic_load(&b->cfg);
			if (p)
				local[i] = *p;
			cfg[i] = p ? &local[i] : NULL;
			atomic_store(&b->seen, g);
			__atomic_store_n(&b->c.cfg_generation, g, __ATOMIC_RELAXED);
		}
		uint64_t now = realtime_ns();
		unsigned n = forward_batch(&pr->b[0], cfg[0], now) + forward_batch(&pr->b[1], cfg[1], now);
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
	atomic_store(&f->stop, 0);
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
	atomic_store(&f->stop, 1);
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
			if (b->has_ring)
				mr_prod__destroy(&b->ring, 1);
			free(atomic_load(&b->cfg));
			port_close(&f->pairs[i].p[j]);
		}
	}
	free(f);
}

unsigned mr_fwd__bindings(const struct mr_fwd *f)
{
	return 2 * f->npairs;
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
	if (!b->has_ring)
		return -ENOENT;
	*ring_fd = b->ring.fd;
	*efd = b->ring.efd;
	return 0;
}

int mr_fwd__ring_lost(const struct mr_fwd *f, unsigned i, char *reason, size_t len)
{
	const struct binding *b = binding_of((struct mr_fwd *)f, i);
	if (!b)
		return -EINVAL;
	if (!b->has_ring)
		return -ENOENT;
	mr_prod__lost_reason(&b->ring, reason, len);
	return mr_prod__lost(&b->ring);
}

void mr_fwd__counters(const struct mr_fwd *f, unsigned i, struct mr_binding_counters *o)
{
	const struct binding *b = binding_of((struct mr_fwd *)f, i);
	memset(o, 0, sizeof(*o));
	if (!b)
		return;
	const uint64_t *src = (const uint64_t *)&b->c;
	uint64_t *dst = (uint64_t *)o;
	for (size_t k = 0; k < sizeof(*o) / sizeof(uint64_t); k++)
		dst[k] = __atomic_load_n(&src[k], __ATOMIC_RELAXED);
}
