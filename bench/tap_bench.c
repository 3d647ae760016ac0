/* SPDX-License-Identifier: MIT */
/*
 * The embeddable tap's cost per frame (native/src/tap.c, mr_tap__offer_burst) beside the
 * mirroring loop forward.c had inline before the tap existed (copied below, verbatim but
 * for the frame source: fragments instead of xdp_desc), in one run, interleaved.
 *
 * Build (from the repository root; tap.c is its own translation unit, so the tap is a real
 * function call as it is from libmirrord, minus the PLT):
 *   gcc -O2 -std=gnu11 -I native/include native/src/tap.c native/src/ring.c native/src/guard.c \
 *       bench/tap_bench.c -lpthread
 * Usage: tap_bench [frames [reps]]   (defaults 2000000 and 7)
 *
 * Cases (bursts of 32 single-fragment frames, as an RX peek):
 *   off     session 0: nothing is mirrored (the cost every forwarder pays)
 *   rate1   every frame copied into the ring (the worst case)
 *   rate64  1 in 64
 * For each case and frame size, each repetition times `frames` frames through the tap and
 * through the inline loop, alternating which goes first; the ring never fills (a consumer
 * in the same thread drains between chunks of 64 bursts, untimed).  Output lines:
 *   result case=C bytes=N tap=ns inline=ns tap_best=ns inline_best=ns   (medians, ns/frame)
 * and a check line per case: pushed counts of both sides equal (they run the same rule).
 */
#define _GNU_SOURCE
#include "mirrord/ring.h"
#include "mirrord/tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BURST 32u
#define CHUNK 64u /* bursts between two untimed drains: 2048 frames, < 4 MiB at 1514 bytes */
#define MAX_REPS 64

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------- the pre-tap inline code of forward.c */

struct mr_mirror_cfg {
	uint32_t session_id, rate, run_length, max_len;
};

struct old_counters {
	_Atomic uint64_t mirror_sampled, mirror_pushed, mirror_dropped_ring_full, mirror_dropped_no_ring,
		mirror_dropped_ring_lost, mirror_table_generation;
};

struct binding {
	struct mr_prod ring;
	int has_ring;
	_Atomic(struct mr_mirror_cfg *) cfg;
	_Atomic uint64_t gen;
	_Atomic uint64_t seen;
	uint64_t k;
	uint32_t run_left;
	struct old_counters c;
};

#define CADD(b, field, n)                                                                        \
	atomic_store_explicit(&(b)->c.field,                                                     \
			      atomic_load_explicit(&(b)->c.field, memory_order_relaxed) + (n),   \
			      memory_order_relaxed)

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

/* worker(): the per-loop table copy; then forward_batch()'s mirror part */
static __attribute__((noinline)) unsigned old_offer(struct binding *b, const struct mr_tap_frame *pk,
						    const uint32_t *lens, uint32_t np, uint32_t ifindex,
						    uint64_t now_ns)
{
	struct mr_mirror_cfg local;
	uint64_t g = atomic_load_explicit(&b->gen, memory_order_acquire);
	struct mr_mirror_cfg *p = atomic_load_explicit(&b->cfg, memory_order_acquire);
	if (p)
		local = *p;
	const struct mr_mirror_cfg *cfg = p ? &local : NULL;
	atomic_store_explicit(&b->seen, g, memory_order_release);
	atomic_store_explicit(&b->c.mirror_table_generation, g, memory_order_relaxed);

	uint64_t sampled = 0, pushed = 0, rfull = 0, noring = 0, lost = 0;
	int ring_lost = b->has_ring && mr_prod__lost(&b->ring);
	for (uint32_t q = 0; q < np; q++) {
		const struct mr_tap_frame *k = &pk[q];
		uint32_t len = lens[q]; /* forward_batch had it from the descriptor cut: free here */
		if (cfg && cfg->session_id && sample(b, cfg)) {
			sampled++;
			if (!b->has_ring) {
				noring++;
			} else if (ring_lost) {
				lost++;
			} else {
				uint32_t cap = cfg->max_len && cfg->max_len < len ? cfg->max_len : len;
				struct mr_rec *r = mr_prod__reserve(&b->ring, cap, len);
				if (!r) {
					rfull++;
				} else {
					r->ifindex = ifindex;
					r->session_id = cfg->session_id;
					r->ts_ns = now_ns;
					uint32_t left = cap < b->ring.max_frame ? cap : b->ring.max_frame;
					uint8_t *dst = mr_rec__data(r);
					for (uint32_t i = 0; i < k->nfrags && left; i++) {
						uint32_t c = k->frags[i].len < left ? k->frags[i].len : left;
						memcpy(dst, k->frags[i].data, c);
						dst += c;
						left -= c;
					}
					pushed++;
				}
			}
		}
	}
	if (pushed)
		mr_prod__submit(&b->ring);
	if ((pushed || rfull) && mr_prod__lost(&b->ring)) {
		lost += pushed + rfull;
		pushed = rfull = 0;
	}
	CADD(b, mirror_sampled, sampled);
	CADD(b, mirror_pushed, pushed);
	CADD(b, mirror_dropped_ring_full, rfull);
	CADD(b, mirror_dropped_no_ring, noring);
	CADD(b, mirror_dropped_ring_lost, lost);
	return (unsigned)pushed;
}

/* ------------------------------------------------------------------- harness */

static void die(const char *what, const char *msg)
{
	fprintf(stderr, "tap_bench: %s: %s\n", what, msg);
	exit(2);
}

static void drain(struct mr_cons *c)
{
	struct mr_frame f[64];
	uint64_t corrupt = 0;
	unsigned n;
	while ((n = mr_cons__peek(c, f, 64, &corrupt)) > 0)
		mr_cons__release(c);
	if (corrupt)
		die("drain", "corrupt ring");
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	uint64_t frames = argc > 1 ? strtoull(argv[1], NULL, 0) : 2000000;
	int reps = argc > 2 ? atoi(argv[2]) : 7;
	if (reps < 1 || reps > MAX_REPS || frames < BURST * CHUNK)
		die("usage", "tap_bench [frames >= 2048 [reps 1..64]]");
	uint64_t chunks = frames / (BURST * CHUNK);
	static const uint32_t sizes[] = {64, 1514};
	static const struct {
		const char *name;
		uint32_t session, rate;
	} cases[] = {{"off", 0, 1}, {"rate1", 7, 1}, {"rate64", 7, 64}};
	char err[256];
	static uint8_t buf[BURST][1514];
	for (unsigned i = 0; i < BURST; i++)
		for (unsigned j = 0; j < sizeof(buf[i]); j++)
			buf[i][j] = (uint8_t)(i + j);

	printf("info frames=%llu reps=%d burst=%u\n", (unsigned long long)frames, reps, BURST);
	for (unsigned ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
		for (unsigned si = 0; si < 2; si++) {
			struct mr_tap_frag frag[BURST];
			struct mr_tap_frame fr[BURST];
			uint32_t lens[BURST];
			for (unsigned i = 0; i < BURST; i++) {
				frag[i] = (struct mr_tap_frag){.data = buf[i], .len = sizes[si]};
				fr[i] = (struct mr_tap_frame){.frags = &frag[i], .nfrags = 1};
				lens[i] = sizes[si];
			}
			/* the tap and its consumer */
			struct mr_tap *tap;
			if (mr_tap__create(&tap, NULL, 0, "bench-tap", err, sizeof(err)))
				die("mr_tap__create", err);
			struct mr_tap_rule rule = {.session_id = cases[ci].session, .rate = cases[ci].rate};
			mr_tap__set_rule(tap, &rule);
			int fd, efd;
			mr_tap__ring_fds(tap, &fd, &efd);
			struct mr_cons ct;
			if (mr_cons__attach(&ct, fd, -2, err, sizeof(err)))
				die("attach tap ring", err);
			/* the old binding and its consumer */
			struct binding *b = calloc(1, sizeof(*b));
			if (!b || mr_prod__create(&b->ring, NULL, 0, 0, "bench-inline", err, sizeof(err)))
				die("mr_prod__create", err);
			b->has_ring = 1;
			struct mr_mirror_cfg *cfg = malloc(sizeof(*cfg));
			*cfg = (struct mr_mirror_cfg){.session_id = cases[ci].session, .rate = cases[ci].rate};
			atomic_store(&b->cfg, cfg);
			atomic_store(&b->gen, 1);
			struct mr_cons cb;
			if (mr_cons__attach(&cb, b->ring.fd, -2, err, sizeof(err)))
				die("attach inline ring", err);

			double t_tap[MAX_REPS], t_old[MAX_REPS];
			uint64_t pushed_tap = 0, pushed_old = 0;
			for (int r = 0; r < reps; r++) {
				for (int side = 0; side < 2; side++) {
					int tap_side = (side + r) % 2 == 0; /* alternate who goes first */
					uint64_t spent = 0;
					for (uint64_t c = 0; c < chunks; c++) {
						uint64_t t0 = now_ns();
						if (tap_side)
							for (unsigned q = 0; q < CHUNK; q++)
								pushed_tap += mr_tap__offer_burst(tap, fr, BURST, 1, t0);
						else
							for (unsigned q = 0; q < CHUNK; q++)
								pushed_old += old_offer(b, fr, lens, BURST, 1, t0);
						spent += now_ns() - t0;
						drain(tap_side ? &ct : &cb);
					}
					double ns = (double)spent / (double)(chunks * CHUNK * BURST);
					(tap_side ? t_tap : t_old)[r] = ns;
				}
			}
			struct mr_tap_counters tc;
			mr_tap__counters(tap, &tc);
			printf("check case=%s bytes=%u ok=%d pushed_tap=%llu pushed_inline=%llu dropped=%llu\n",
			       cases[ci].name, sizes[si],
			       pushed_tap == pushed_old && tc.pushed == pushed_tap && tc.dropped_ring_full == 0,
			       (unsigned long long)pushed_tap, (unsigned long long)pushed_old,
			       (unsigned long long)tc.dropped_ring_full);
			double best_tap = t_tap[0], best_old = t_old[0];
			for (int r = 1; r < reps; r++) {
				best_tap = t_tap[r] < best_tap ? t_tap[r] : best_tap;
				best_old = t_old[r] < best_old ? t_old[r] : best_old;
			}
			qsort(t_tap, (size_t)reps, sizeof(double), cmp);
			qsort(t_old, (size_t)reps, sizeof(double), cmp);
			printf("result case=%s bytes=%u tap=%.2f inline=%.2f tap_best=%.2f inline_best=%.2f\n",
			       cases[ci].name, sizes[si], t_tap[reps / 2], t_old[reps / 2], best_tap, best_old);
			fflush(stdout);
			mr_cons__detach(&ct);
			mr_cons__detach(&cb);
			mr_tap__destroy(tap);
			mr_prod__destroy(&b->ring, 0);
			free(atomic_load(&b->cfg));
			free(b);
		}
	}
	return 0;
}
