/* SPDX-License-Identifier: MIT */
/*
 * Benchmark of the mirror ring (native/include/mirrord/ring.h, native/src/ring.c).
 *
 * Build (from the repository root):
 *   gcc -O2 -std=gnu11 -I native/include native/src/ring.c native/src/guard.c bench/ring_bench.c -lpthread
 * Usage:
 *   ring_bench [records [reps [e2e_ms [all|push|e2e]]]]
 *     records  records per single-thread measurement (default 1000000)
 *     reps     repetitions of every measurement (default 5); variants are interleaved
 *              inside each repetition so that machine noise hits them alike
 *     e2e_ms   length of one two-thread run (default 200): the producer offers copies
 *              for that long, or until it has offered 64 * records, whichever comes first
 *     all|push|e2e which measurements to run (default all)
 *
 * Output: one line per fact, "kind key=value key=value ...", for bench/ring.py to parse:
 *   info   key=value ...                                  environment
 *   sample id=ID bytes=N rep=R value=V [more]             one repetition of one measurement
 *   check  id=ID bytes=N rep=R ok=0|1 offered=.. ...     end-to-end accounting of one run
 *   result id=ID bytes=N unit=U median=V best=V worst=V samples=v,v,..
 * bench/ring.py turns the result lines into the table.  Units: ns_rec (ns per record,
 * lower is better), rec_s (records per second, higher is better), ratio (0..1).
 *
 * Measurements (N = 64 and 1514 byte frames):
 *   push_single   mr_prod__push per record (reserve + memcpy + submit), one thread, the
 *                 ring never fills: records go in bursts that fit (7/8 of the data area),
 *                 and a consumer in the same thread drains between bursts, untimed
 *   push_batch    the same with mr_prod__reserve x32, copy, then one mr_prod__submit
 *   memcpy        baseline: memcpy of the frame into a same-sized buffer at the offsets
 *                 a ring record would take (same stride, alignment, wrap), same bursts
 *   seqcst        a seq_cst store alone: the per-submit StoreLoad of the wake-up protocol
 *                 (hdr->prod is stored seq_cst, or release + seq_cst fence in older ring.h;
 *                 gcc emits one locked instruction, xchg, either way)
 *   e2e_push      producer thread (CPU 0) mr_prod__push as fast as it can, dropping on
 *                 ring_full; consumer thread (CPU 1) mr_cons__peek x32 + mr_cons__release,
 *                 checking every seq and the seq stamped into the first 8 frame bytes
 *   e2e_batch     the same with a batch-of-32 producer
 *   e2e_drop      drop ratio (dropped / offered) of e2e_push / e2e_batch
 *   e2e_memcpy    baseline: one thread, memcpy in to the buffer + memcpy out, no ring
 *   e2e_spsc      reference: the same two threads over a minimal SPSC ring of fixed 2 KiB
 *                 slots (release/acquire indices, no counters, no validation, no wake-up)
 *   pingpong      one cache line bounced between the two threads: ns per round trip, the
 *                 price of every line the producer and the consumer hand to each other
 */
#define _GNU_SOURCE
#include "mirrord/ring.h"

#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define BATCH 32u
#define MAX_REPS 64
#define RING_BYTES MR_RING_DEFAULT_DATA

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#else
#define cpu_relax() __asm__ __volatile__("" ::: "memory")
#endif
#define barrier() __asm__ __volatile__("" ::: "memory")

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, const char *msg)
{
	fprintf(stderr, "ring_bench: %s: %s\n", what, msg);
	exit(2);
}

/* Frame lengths come from a volatile so that the compiler cannot specialise memcpy for
 * a constant size in one variant and not in another (real frame lengths are runtime). */
static volatile uint32_t opaque_len;
static uint32_t runtime_len(uint32_t len)
{
	opaque_len = len;
	return opaque_len;
}

static int ncpus;
static uint64_t e2e_ns = 200000000ull; /* producer time budget of one two-thread run */
#define E2E_CAP_PER_RECORD 64         /* ... and at most 64 * records copies offered */
#define CLOCK_EVERY 256               /* the producer reads the clock every 256 offers */
static int pin_to(int cpu)
{
	if (cpu >= ncpus)
		return 0;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return pthread_setaffinity_np(pthread_self(), sizeof(set), &set) == 0; /* failure is fine */
}

static uint64_t stride_of(uint32_t len)
{
	return MR_ALIGN8((uint64_t)MR_REC_HDR_SIZE + len);
}

/* records per untimed-drain burst: fits in 7/8 of the ring including a wrap pad */
static uint64_t burst_of(uint32_t len)
{
	uint64_t b = (RING_BYTES / 8 * 7) / stride_of(len);
	b -= b % BATCH;
	return b ? b : BATCH;
}

static void *xalloc(size_t n)
{
	void *p = NULL;
	if (posix_memalign(&p, 4096, n))
		die("posix_memalign", "out of memory");
	memset(p, 0x5a, n); /* fault every page in */
	return p;
}

static void ring_open(struct mr_prod *p, struct mr_cons *c)
{
	char err[256] = "";
	if (mr_prod__create(p, NULL, 0, 0, "bench", err, sizeof(err)))
		die("mr_prod__create", err);
	if (mr_cons__attach(c, p->fd, -2, err, sizeof(err))) /* -2: no eventfd, polling */
		die("mr_cons__attach", err);
	/* fault the consumer's mapping in, so the first run does not pay for it */
	volatile const uint8_t *d = c->data;
	for (uint64_t i = 0; i < c->size; i += 4096)
		(void)d[i];
}

static void ring_close(struct mr_prod *p, struct mr_cons *c)
{
	mr_cons__detach(c);
	mr_prod__destroy(p, 1);
}

/* untimed: consume and release everything published */
static uint64_t drain_all(struct mr_cons *c)
{
	struct mr_frame f;
	uint64_t n = 0;
	int r;
	while ((r = mr_cons__next(c, &f)) != 0)
		if (r > 0)
			n++;
	mr_cons__release(c);
	return n;
}

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* higher_better: rec/s; best is then the max */
static void result(const char *id, uint32_t bytes, const char *unit, const double *v, int n,
		   int higher_better)
{
	double s[MAX_REPS];
	memcpy(s, v, sizeof(double) * (size_t)n);
	qsort(s, (size_t)n, sizeof(double), cmp_dbl);
	double med = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
	double best = higher_better ? s[n - 1] : s[0];
	double worst = higher_better ? s[0] : s[n - 1];
	printf("result id=%s bytes=%u unit=%s median=%.6g best=%.6g worst=%.6g samples=", id, bytes,
	       unit, med, best, worst);
	for (int i = 0; i < n; i++)
		printf("%s%.6g", i ? "," : "", v[i]);
	printf("\n");
	fflush(stdout);
}

/* ------------------------------------------------------------ single-thread push cost */

static uint8_t frame_src[2048] __attribute__((aligned(64)));
static const struct mr_meta bench_meta = { .wire_len = 0, .ifindex = 3, .session_id = 7, .ts_ns = 0 };

enum { V_SINGLE, V_BATCH, V_MEMCPY, V_COUNT };
static const char *const v_name[V_COUNT] = { "push_single", "push_batch", "memcpy" };

struct micro {
	struct mr_prod p;
	struct mr_cons c;
	uint8_t *buf;  /* memcpy baseline: same size as the ring's data area */
	uint64_t off;  /* memcpy baseline: free-running like the ring index */
	uint64_t fails;
};

/* One timed burst of n records; returns the elapsed ns. */
static uint64_t burst(struct micro *m, int v, uint32_t len, uint64_t n)
{
	uint64_t t0, t1, fails = 0;
	const uint8_t *src = frame_src;

	if (v == V_SINGLE) {
		struct mr_prod *p = &m->p;
		t0 = now_ns();
		for (uint64_t i = 0; i < n; i++)
			fails += mr_prod__push(p, src, len, &bench_meta) != 0;
		t1 = now_ns();
	} else if (v == V_BATCH) {
		struct mr_prod *p = &m->p;
		t0 = now_ns();
		for (uint64_t i = 0; i < n; i += BATCH) {
			for (unsigned j = 0; j < BATCH; j++) {
				struct mr_rec *r = mr_prod__reserve(p, len, 0);
				if (!r) {
					fails++;
					continue;
				}
				r->ifindex = bench_meta.ifindex;
				r->session_id = bench_meta.session_id;
				r->ts_ns = bench_meta.ts_ns;
				/* len, not r->cap_len: never reread a length from shared memory */
				memcpy(mr_rec__data(r), src, len);
			}
			mr_prod__submit(p);
		}
		t1 = now_ns();
	} else {
		uint8_t *buf = m->buf;
		uint64_t off = m->off, stride = stride_of(len);
		t0 = now_ns();
		for (uint64_t i = 0; i < n; i++) {
			uint64_t o = off & (RING_BYTES - 1);
			if (RING_BYTES - o < stride) { /* the ring would pad to the end here */
				off += RING_BYTES - o;
				o = 0;
			}
			memcpy(buf + o + MR_REC_HDR_SIZE, src, len);
			off += stride;
		}
		barrier();
		t1 = now_ns();
		m->off = off;
	}
	m->fails += fails;
	return t1 - t0;
}

static void bench_micro(const uint32_t *sizes, int nsizes, uint64_t records, int reps)
{
	struct micro *m = xalloc(sizeof(*m));
	memset(m, 0, sizeof(*m));
	ring_open(&m->p, &m->c);
	m->buf = xalloc(RING_BYTES);

	for (int s = 0; s < nsizes; s++) {
		uint32_t len = runtime_len(sizes[s]);
		uint64_t b = burst_of(len);
		uint64_t n = records < b ? (records + BATCH - 1) / BATCH * BATCH : records;
		double val[V_COUNT][MAX_REPS];

		/* warm-up: one untimed burst of each variant */
		for (int v = 0; v < V_COUNT; v++) {
			burst(m, v, len, b);
			drain_all(&m->c);
		}
		m->fails = 0;
		for (int r = 0; r < reps; r++) {
			for (int v = 0; v < V_COUNT; v++) {
				uint64_t done = 0, ns = 0;
				while (done < n) {
					uint64_t k = n - done < b ? n - done : b;
					k = (k + BATCH - 1) / BATCH * BATCH;
					ns += burst(m, v, len, k);
					done += k;
					drain_all(&m->c); /* untimed: the ring is empty again */
				}
				val[v][r] = (double)ns / (double)done;
				printf("sample id=%s bytes=%u rep=%d value=%.4f records=%" PRIu64 "\n",
				       v_name[v], len, r, val[v][r], done);
			}
		}
		for (int v = 0; v < V_COUNT; v++)
			result(v_name[v], len, "ns_rec", val[v], reps, 0);
		printf("check id=push bytes=%u ok=%d ring_full_during_push=%" PRIu64 "\n", len,
		       m->fails == 0, m->fails);
	}
	ring_close(&m->p, &m->c);
	free(m->buf);
	free(m);
}

/* the StoreLoad of the wake-up protocol that every submit pays, alone: a seq_cst store */
static void bench_seqcst(uint64_t records, int reps)
{
	double val[MAX_REPS];
	static _Alignas(64) _Atomic uint64_t x;
	for (int r = 0; r < reps; r++) {
		uint64_t t0 = now_ns();
		for (uint64_t i = 0; i < records; i++)
			atomic_store_explicit(&x, i, memory_order_seq_cst);
		uint64_t t1 = now_ns();
		val[r] = (double)(t1 - t0) / (double)records;
		printf("sample id=seqcst bytes=0 rep=%d value=%.4f\n", r, val[r]);
	}
	result("seqcst", 0, "ns_rec", val, reps, 0);
}

/* ------------------------------------------------------------ end to end, two threads */

struct e2e_shared {
	struct mr_prod *p;
	struct mr_cons *c;
	uint32_t len;
	uint64_t n;
	int batch;
	_Alignas(64) atomic_int ready;
	_Alignas(64) atomic_int done;
	_Alignas(64) uint64_t t_start, t_prod_end, offered, pushed, dropped; /* by the producer */
	int prod_pinned;
	_Alignas(64) uint64_t t_end, delivered, gaps, next_seq, nonmono, bad_stamp, corrupt,
		sum; /* written by the consumer */
	int cons_pinned;
};

static void start_line(atomic_int *ready)
{
	atomic_fetch_add(ready, 1);
	while (atomic_load(ready) < 2)
		cpu_relax();
}

static void *e2e_producer(void *arg)
{
	struct e2e_shared *s = arg;
	struct mr_prod *p = s->p;
	uint8_t *src = xalloc(2048); /* the producer's own frame, stamped with its seq */
	const uint32_t len = s->len;
	const uint64_t n = s->n;
	uint64_t pushed = 0, dropped = 0, i;

	memcpy(src, frame_src, len);
	s->prod_pinned = pin_to(0);
	start_line(&s->ready);
	s->t_start = now_ns();
	const uint64_t deadline = s->t_start + e2e_ns;
	if (!s->batch) {
		for (i = 0; i < n; i++) {
			if (i % CLOCK_EVERY == 0 && now_ns() >= deadline)
				break;
			memcpy(src, &i, 8);
			if (mr_prod__push(p, src, len, &bench_meta) == 0)
				pushed++;
			else
				dropped++;
		}
	} else {
		for (i = 0; i < n;) {
			if (i % CLOCK_EVERY == 0 && now_ns() >= deadline)
				break;
			for (unsigned j = 0; j < BATCH && i < n; j++, i++) {
				struct mr_rec *r = mr_prod__reserve(p, len, 0);
				if (!r) {
					dropped++;
					continue;
				}
				r->ifindex = bench_meta.ifindex;
				r->session_id = bench_meta.session_id;
				r->ts_ns = bench_meta.ts_ns;
				uint8_t *d = mr_rec__data(r);
				memcpy(d, src, len);
				memcpy(d, &i, 8);
				pushed++;
			}
			mr_prod__submit(p);
		}
	}
	s->t_prod_end = now_ns();
	s->offered = i;
	s->pushed = pushed;
	s->dropped = dropped;
	atomic_store_explicit(&s->done, 1, memory_order_release);
	free(src);
	return NULL;
}

static void *e2e_consumer(void *arg)
{
	struct e2e_shared *s = arg;
	struct mr_cons *c = s->c;
	struct mr_frame fr[BATCH];
	uint64_t delivered = 0, gaps = 0, next_seq = 0, nonmono = 0, bad = 0, corrupt = 0, sum = 0;

	s->cons_pinned = pin_to(1);
	start_line(&s->ready);
	for (;;) {
		int fin = atomic_load_explicit(&s->done, memory_order_acquire);
		unsigned k = mr_cons__peek(c, fr, BATCH, &corrupt);
		if (!k) {
			if (fin) /* the producer was done before this peek: nothing more comes */
				break;
			cpu_relax();
			continue;
		}
		for (unsigned i = 0; i < k; i++) {
			uint64_t seq = fr[i].seq, stamp;
			if (seq < next_seq) {
				nonmono++;
			} else {
				gaps += seq - next_seq; /* copies offered but dropped in between */
				next_seq = seq + 1;
			}
			memcpy(&stamp, fr[i].data, 8);
			bad += stamp != seq || fr[i].cap_len != s->len;
			sum += fr[i].data[fr[i].cap_len - 1];
		}
		delivered += k;
		mr_cons__release(c);
	}
	s->t_end = now_ns();
	s->delivered = delivered;
	s->gaps = gaps;
	s->next_seq = next_seq;
	s->nonmono = nonmono;
	s->bad_stamp = bad;
	s->corrupt = corrupt;
	s->sum = sum;
	return NULL;
}

static int run_pair(void *(*prod)(void *), void *(*cons)(void *), void *arg)
{
	pthread_t tp, tc;
	if (pthread_create(&tc, NULL, cons, arg))
		return -1;
	if (pthread_create(&tp, NULL, prod, arg)) {
		fprintf(stderr, "ring_bench: pthread_create failed\n");
		exit(2);
	}
	pthread_join(tp, NULL);
	pthread_join(tc, NULL);
	return 0;
}

/* Returns delivered records/s; *drop_ratio gets dropped/offered. */
static double e2e_ring(const char *id, uint32_t len, uint64_t n, int batch, int rep,
		       double *drop_ratio, int *ok_out)
{
	struct e2e_shared *s = xalloc(sizeof(*s));
	struct mr_prod *p = xalloc(sizeof(*p));
	struct mr_cons *c = xalloc(sizeof(*c));

	memset(s, 0, sizeof(*s));
	ring_open(p, c);
	s->p = p;
	s->c = c;
	s->len = len;
	s->n = n;
	s->batch = batch;
	run_pair(e2e_producer, e2e_consumer, s);

	n = s->offered;
	uint64_t trailing = n - s->next_seq; /* drops after the last delivered copy */
	int ok = s->pushed + s->dropped == n && p->seq == n && p->pushed_pkts == s->pushed &&
		 p->drop_full_pkts == s->dropped && s->delivered == s->pushed && s->nonmono == 0 &&
		 s->gaps + trailing == s->dropped && s->bad_stamp == 0 && s->corrupt == 0 &&
		 c->consumed_pkts == s->delivered;
	double secs = (double)(s->t_end - s->t_start) / 1e9;
	double rate = (double)s->delivered / secs;
	double offer_rate = (double)n / ((double)(s->t_prod_end - s->t_start) / 1e9);
	if (!n)
		ok = 0;
	*drop_ratio = (double)s->dropped / (double)n;
	*ok_out = ok;
	printf("sample id=%s bytes=%u rep=%d value=%.6g offered_rec_s=%.6g secs=%.4f pinned=%d,%d\n",
	       id, len, rep, rate, offer_rate, secs, s->prod_pinned, s->cons_pinned);
	printf("check id=%s bytes=%u rep=%d ok=%d offered=%" PRIu64 " pushed=%" PRIu64
	       " dropped=%" PRIu64 " delivered=%" PRIu64 " seq_gaps=%" PRIu64 " nonmonotonic=%" PRIu64
	       " bad_payload=%" PRIu64 " corrupt=%" PRIu64 " ring_pushed=%" PRIu64
	       " ring_dropped=%" PRIu64 " ring_consumed=%" PRIu64 " ring_wakeups=%" PRIu64 "\n",
	       id, len, rep, ok, n, s->pushed, s->dropped, s->delivered, s->gaps + trailing,
	       s->nonmono, s->bad_stamp, s->corrupt, p->pushed_pkts, p->drop_full_pkts,
	       c->consumed_pkts, p->wakeups);
	ring_close(p, c);
	free(c);
	free(p);
	free(s);
	return rate;
}

/* baseline: one thread, memcpy in to a ring-sized buffer, memcpy out, check the stamp */
static double e2e_memcpy(uint32_t len, uint64_t n, uint8_t *buf, int rep)
{
	uint8_t *src = xalloc(2048), *out = xalloc(2048);
	uint64_t off = 0, stride = stride_of(len), bad = 0, sum = 0;

	memcpy(src, frame_src, len);
	uint64_t t0 = now_ns();
	for (uint64_t i = 0; i < n; i++) {
		uint64_t o = off & (RING_BYTES - 1), stamp;
		if (RING_BYTES - o < stride) {
			off += RING_BYTES - o;
			o = 0;
		}
		memcpy(src, &i, 8);
		memcpy(buf + o + MR_REC_HDR_SIZE, src, len);
		barrier(); /* a real copy in, then a real copy out */
		memcpy(out, buf + o + MR_REC_HDR_SIZE, len);
		memcpy(&stamp, out, 8);
		bad += stamp != i;
		sum += out[len - 1];
		off += stride;
	}
	uint64_t t1 = now_ns();
	double rate = (double)n / ((double)(t1 - t0) / 1e9);
	printf("sample id=e2e_memcpy bytes=%u rep=%d value=%.6g bad=%" PRIu64 " sum=%" PRIu64 "\n",
	       len, rep, rate, bad, sum);
	free(src);
	free(out);
	return rate;
}

/* reference: a minimal SPSC ring of fixed 2 KiB slots between the same two threads */
#define SLOT 2048u
#define NSLOTS (RING_BYTES / SLOT)
struct spsc {
	uint8_t *slots;
	uint32_t len;
	uint64_t n;
	_Alignas(64) _Atomic uint64_t head; /* producer */
	_Alignas(64) _Atomic uint64_t tail; /* consumer */
	_Alignas(64) atomic_int ready;
	_Alignas(64) atomic_int done;
	_Alignas(64) uint64_t t_start, offered, pushed, dropped;
	_Alignas(64) uint64_t t_end, delivered, gaps, next_seq, nonmono, bad, sum;
};

static void *spsc_producer(void *arg)
{
	struct spsc *q = arg;
	uint8_t *src = xalloc(2048);
	const uint32_t len = q->len;
	uint64_t head = 0, cached_tail = 0, pushed = 0, dropped = 0, i;

	memcpy(src, frame_src, len);
	pin_to(0);
	start_line(&q->ready);
	q->t_start = now_ns();
	const uint64_t deadline = q->t_start + e2e_ns;
	for (i = 0; i < q->n; i++) {
		if (i % CLOCK_EVERY == 0 && now_ns() >= deadline)
			break;
		if (head - cached_tail == NSLOTS) {
			cached_tail = atomic_load_explicit(&q->tail, memory_order_acquire);
			if (head - cached_tail == NSLOTS) {
				dropped++;
				continue;
			}
		}
		uint8_t *slot = q->slots + (head & (NSLOTS - 1)) * SLOT;
		memcpy(src, &i, 8);
		memcpy(slot, &i, 8);
		memcpy(slot + 8, &len, 4);
		memcpy(slot + 16, src, len);
		atomic_store_explicit(&q->head, ++head, memory_order_release);
		pushed++;
	}
	q->offered = i;
	q->pushed = pushed;
	q->dropped = dropped;
	atomic_store_explicit(&q->done, 1, memory_order_release);
	free(src);
	return NULL;
}

static void *spsc_consumer(void *arg)
{
	struct spsc *q = arg;
	uint64_t tail = 0, cached_head = 0, delivered = 0, gaps = 0, next_seq = 0, nonmono = 0,
		 bad = 0, sum = 0;

	pin_to(1);
	start_line(&q->ready);
	for (;;) {
		int fin = atomic_load_explicit(&q->done, memory_order_acquire);
		if (tail == cached_head) {
			cached_head = atomic_load_explicit(&q->head, memory_order_acquire);
			if (tail == cached_head) {
				if (fin)
					break;
				cpu_relax();
				continue;
			}
		}
		uint64_t k = cached_head - tail;
		if (k > BATCH)
			k = BATCH;
		for (uint64_t i = 0; i < k; i++) {
			const uint8_t *slot = q->slots + ((tail + i) & (NSLOTS - 1)) * SLOT;
			uint64_t seq, stamp;
			uint32_t len;
			memcpy(&seq, slot, 8);
			memcpy(&len, slot + 8, 4);
			if (seq < next_seq) {
				nonmono++;
			} else {
				gaps += seq - next_seq;
				next_seq = seq + 1;
			}
			memcpy(&stamp, slot + 16, 8);
			bad += stamp != seq || len != q->len || len > SLOT - 16;
			sum += slot[16 + (len - 1) % (SLOT - 16)];
		}
		tail += k;
		delivered += k;
		atomic_store_explicit(&q->tail, tail, memory_order_release);
	}
	q->t_end = now_ns();
	q->delivered = delivered;
	q->gaps = gaps + (q->offered - next_seq);
	q->nonmono = nonmono;
	q->bad = bad;
	q->sum = sum;
	return NULL;
}

static double e2e_spsc(uint32_t len, uint64_t n, uint8_t *slots, int rep)
{
	struct spsc *q = xalloc(sizeof(*q));
	memset(q, 0, sizeof(*q));
	q->slots = slots;
	q->len = len;
	q->n = n;
	run_pair(spsc_producer, spsc_consumer, q);
	int ok = q->offered && q->pushed + q->dropped == q->offered && q->delivered == q->pushed && q->nonmono == 0 &&
		 q->gaps == q->dropped && q->bad == 0;
	double rate = (double)q->delivered / ((double)(q->t_end - q->t_start) / 1e9);
	printf("sample id=e2e_spsc bytes=%u rep=%d value=%.6g drop_ratio=%.4f offered=%" PRIu64
	       " ok=%d\n", len, rep, rate, (double)q->dropped / (double)q->offered, q->offered, ok);
	free(q);
	return rate;
}

/* one cache line bounced between CPU 0 and CPU 1 */
#define PP_STOP UINT64_MAX
struct pingpong {
	_Alignas(64) _Atomic uint64_t ball;
	_Alignas(64) atomic_int ready;
	_Alignas(64) uint64_t trips, ns;
};

static void *pp_server(void *arg)
{
	struct pingpong *g = arg;
	pin_to(0);
	start_line(&g->ready);
	uint64_t t0 = now_ns(), deadline = t0 + e2e_ns / 4, i = 0;
	for (;; i++) {
		if (i % 64 == 0 && (now_ns() >= deadline || i >= 1000000))
			break;
		atomic_store_explicit(&g->ball, 2 * i + 1, memory_order_release);
		while (atomic_load_explicit(&g->ball, memory_order_acquire) != 2 * i + 2)
			cpu_relax();
	}
	g->ns = now_ns() - t0;
	g->trips = i;
	atomic_store_explicit(&g->ball, PP_STOP, memory_order_release);
	return NULL;
}

static void *pp_client(void *arg)
{
	struct pingpong *g = arg;
	pin_to(1);
	start_line(&g->ready);
	for (;;) {
		uint64_t v = atomic_load_explicit(&g->ball, memory_order_acquire);
		if (v == PP_STOP)
			break;
		if (v & 1)
			atomic_store_explicit(&g->ball, v + 1, memory_order_release);
		else
			cpu_relax();
	}
	return NULL;
}

static void bench_pingpong(int reps)
{
	double val[MAX_REPS];
	for (int r = 0; r < reps; r++) {
		struct pingpong *g = xalloc(sizeof(*g));
		memset(g, 0, sizeof(*g));
		run_pair(pp_server, pp_client, g);
		val[r] = g->trips ? (double)g->ns / (double)g->trips : 0;
		printf("sample id=pingpong bytes=0 rep=%d value=%.4f trips=%" PRIu64 "\n", r, val[r],
		       g->trips);
		free(g);
	}
	result("pingpong", 0, "ns_rec", val, reps, 0);
}

static void bench_e2e(const uint32_t *sizes, int nsizes, uint64_t records, int reps)
{
	bench_pingpong(reps);
	uint8_t *buf = xalloc(RING_BYTES);
	for (int s = 0; s < nsizes; s++) {
		uint32_t len = runtime_len(sizes[s]);
		double push[MAX_REPS], batch[MAX_REPS], dp[MAX_REPS], db[MAX_REPS];
		double mc[MAX_REPS], sp[MAX_REPS];
		int okp = 1, okb = 1, ok;
		for (int r = 0; r < reps; r++) {
			uint64_t cap = records * E2E_CAP_PER_RECORD;
			push[r] = e2e_ring("e2e_push", len, cap, 0, r, &dp[r], &ok);
			okp &= ok;
			batch[r] = e2e_ring("e2e_batch", len, cap, 1, r, &db[r], &ok);
			okb &= ok;
			mc[r] = e2e_memcpy(len, records, buf, r);
			sp[r] = e2e_spsc(len, cap, buf, r);
		}
		result("e2e_push", len, "rec_s", push, reps, 1);
		result("e2e_push_drop", len, "ratio", dp, reps, 0);
		result("e2e_batch", len, "rec_s", batch, reps, 1);
		result("e2e_batch_drop", len, "ratio", db, reps, 0);
		result("e2e_memcpy", len, "rec_s", mc, reps, 1);
		result("e2e_spsc", len, "rec_s", sp, reps, 1);
		printf("check id=e2e_push bytes=%u ok=%d\n", len, okp);
		printf("check id=e2e_batch bytes=%u ok=%d\n", len, okb);
	}
	free(buf);
}

int main(int argc, char **argv)
{
	uint64_t records = argc > 1 ? strtoull(argv[1], NULL, 0) : 1000000;
	int reps = argc > 2 ? atoi(argv[2]) : 5;
	long e2e_ms = argc > 3 ? atol(argv[3]) : 200;
	const char *only = argc > 4 ? argv[4] : "all";
	int do_push = !strcmp(only, "all") || !strcmp(only, "push");
	int do_e2e = !strcmp(only, "all") || !strcmp(only, "e2e");
	static const uint32_t sizes[] = { 64, 1514 };

	if (records < BATCH || records > (1ull << 40) || reps < 1 || reps > MAX_REPS || e2e_ms < 1 ||
	    !(do_push || do_e2e)) {
		fprintf(stderr, "usage: %s [records>=%u [reps 1..%d [e2e_ms>=1 [all|push|e2e]]]]\n",
			argv[0], BATCH, MAX_REPS);
		return 2;
	}
	e2e_ns = (uint64_t)e2e_ms * 1000000ull;
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (unsigned i = 0; i < sizeof(frame_src); i++)
		frame_src[i] = (uint8_t)(i * 7 + 1);
	ncpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
	cpu_set_t set;
	int allowed = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : -1;
	printf("info records=%" PRIu64 " reps=%d e2e_ms=%ld online_cpus=%d allowed_cpus=%d ring_bytes=%u "
	       "max_frame=%u batch=%u clock=CLOCK_MONOTONIC\n",
	       records, reps, e2e_ms, ncpus, allowed, RING_BYTES, MR_FRAME_DEFAULT, BATCH);

	uint64_t t0 = now_ns();
	if (do_push) {
		bench_micro(sizes, 2, records, reps);
		bench_seqcst(records, reps);
	}
	if (do_e2e)
		bench_e2e(sizes, 2, records, reps);
	printf("info total_secs=%.2f\n", (double)(now_ns() - t0) / 1e9);
	return 0;
}
