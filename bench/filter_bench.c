/* SPDX-License-Identifier: MIT */
/*
 * The capture filter's cost per frame in the tap (native/src/tap.c, mr_tap__offer_burst
 * running libpcap's bpf_filter() before sampling), for programs of 1, 5 and 20
 * instructions, beside the same tap without a filter, in one run, sliced and interleaved.
 *
 * Build (from the repository root; tap.c is its own translation unit, as from libmirrord):
 *   gcc -O2 -std=gnu11 -I native/include native/src/tap.c native/src/ring.c native/src/guard.c \
 *       bench/filter_bench.c -lpcap -lpthread
 * Usage: filter_bench [frames [reps]]   (defaults 2000000 and 7)
 *
 * Every case is a tap without a ring (mr_tap__create_no_ring), session 7, rate UINT32_MAX
 * (frame 0 is sampled, then nothing for 4e9 frames: no copy cost anywhere), offered bursts
 * of 32 single-fragment 64-byte IPv4/UDP frames to port 5000 that every filter rejects:
 *   none     no filter: the sampling rule alone
 *   none2    the same on a second tap: the control row (how far the method is from itself)
 *   insn1    `ret #0` (1 instruction, 1 executed; built by hand: libpcap refuses to compile
 *            an expression that rejects everything, `tcpdump -d ""` is its twin `ret #262144`)
 *   insn5    "arp or ip6" (5 instructions; 4 executed on IPv4)
 *   insn20   "udp port 53" (20 instructions; 13 executed on IPv4/UDP to port 5000)
 * A repetition gives every case one slice of `frames` frames, in a rotating order.  Output:
 *   result case=C insns=N ns=median best=min   (ns per frame)
 *   check case=C ok=0|1 filtered=... sampled=... seen=...   (exact counts)
 */
#define _GNU_SOURCE
#include "mirrord/tap.h"

#include <pcap/pcap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BURST 32u
#define MAX_REPS 64
#define NCASES 5

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, const char *msg)
{
	fprintf(stderr, "filter_bench: %s: %s\n", what, msg);
	exit(2);
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* libpcap's program for expr, as mirrord/filter.py compiles it (Ethernet, snaplen 262144) */
static struct bpf_program compile(const char *expr)
{
	pcap_t *p = pcap_open_dead(DLT_EN10MB, 262144);
	struct bpf_program prog;
	if (!p || pcap_compile(p, &prog, expr, 1, PCAP_NETMASK_UNKNOWN))
		die(expr, p ? pcap_geterr(p) : "pcap_open_dead");
	pcap_close(p);
	return prog;
}

int main(int argc, char **argv)
{
	uint64_t frames = argc > 1 ? strtoull(argv[1], NULL, 0) : 2000000;
	int reps = argc > 2 ? atoi(argv[2]) : 7;
	if (reps < 1 || reps > MAX_REPS || frames < BURST)
		die("usage", "filter_bench [frames >= 32 [reps 1..64]]");
	uint64_t bursts = frames / BURST;

	/* 60 bytes (64 on the wire): Ethernet, IPv4 10.99.0.1 -> 10.99.0.2, UDP 4000 -> 5000 */
	static const uint8_t frame[60] = {
		0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00,
		0x45, 0, 0, 46, 0, 1, 0, 0, 64, 17, 0, 0, 10, 99, 0, 1, 10, 99, 0, 2,
		0x0f, 0xa0, 0x13, 0x88, 0, 26, 0, 0};
	struct mr_tap_frag frag[BURST];
	struct mr_tap_frame fr[BURST];
	for (unsigned i = 0; i < BURST; i++) {
		frag[i] = (struct mr_tap_frag){.data = frame, .len = sizeof(frame)};
		fr[i] = (struct mr_tap_frame){.frags = &frag[i], .nfrags = 1};
	}

	static const struct mr_tap_insn ret0 = {.code = 0x06, .k = 0}; /* BPF_RET|BPF_K #0 */
	struct bpf_program p5 = compile("arp or ip6"), p20 = compile("udp port 53");
	struct {
		const char *name;
		const struct mr_tap_insn *prog;
		uint32_t n;
		struct mr_tap *tap;
		double ns[MAX_REPS];
	} c[NCASES] = {
		{.name = "none"}, {.name = "none2"}, {.name = "insn1", .prog = &ret0, .n = 1},
		{.name = "insn5", .prog = (const struct mr_tap_insn *)p5.bf_insns, .n = p5.bf_len},
		{.name = "insn20", .prog = (const struct mr_tap_insn *)p20.bf_insns, .n = p20.bf_len},
	};
	struct mr_tap_rule rule = {.session_id = 7, .rate = UINT32_MAX};
	for (int i = 0; i < NCASES; i++) {
		if (mr_tap__create_no_ring(&c[i].tap))
			die(c[i].name, "mr_tap__create_no_ring");
		if (mr_tap__set_rule_filter(c[i].tap, &rule, c[i].prog, c[i].n))
			die(c[i].name, "mr_tap__set_rule_filter refused the program");
	}
	printf("info frames=%llu reps=%d burst=%u bytes=%zu\n", (unsigned long long)(bursts * BURST), reps, BURST,
	       sizeof(frame));
	for (int r = 0; r < reps; r++) {
		for (int j = 0; j < NCASES; j++) {
			int i = (j + r) % NCASES; /* a rotating order: no case always runs first or after another */
			uint64_t t0 = now_ns();
			for (uint64_t b = 0; b < bursts; b++)
				mr_tap__offer_burst(c[i].tap, fr, BURST, 1, t0);
			c[i].ns[r] = (double)(now_ns() - t0) / (double)(bursts * BURST);
		}
	}
	int bad = 0;
	for (int i = 0; i < NCASES; i++) {
		struct mr_tap_counters k;
		mr_tap__counters(c[i].tap, &k);
		uint64_t f = mr_tap__filtered(c[i].tap), all = (uint64_t)reps * bursts * BURST;
		/* without a filter: frame 0 sampled (no ring: dropped_no_ring), none filtered; with
		 * one: every frame filtered, none sampled; seen = filtered + not sampled + sampled */
		int ok = k.seen == all && (c[i].n ? f == all && k.sampled == 0 : f == 0 && k.sampled == 1) &&
			 k.sampled == k.pushed + k.dropped_ring_full + k.dropped_no_ring + k.dropped_ring_lost;
		bad |= !ok;
		printf("check case=%s ok=%d seen=%llu filtered=%llu sampled=%llu\n", c[i].name, ok,
		       (unsigned long long)k.seen, (unsigned long long)f, (unsigned long long)k.sampled);
		double best = c[i].ns[0];
		for (int q = 1; q < reps; q++)
			best = c[i].ns[q] < best ? c[i].ns[q] : best;
		qsort(c[i].ns, (size_t)reps, sizeof(double), cmp);
		printf("result case=%s insns=%u ns=%.2f best=%.2f\n", c[i].name, c[i].n, c[i].ns[reps / 2], best);
		mr_tap__destroy(c[i].tap);
	}
	pcap_freecode(&p5);
	pcap_freecode(&p20);
	return bad;
}
