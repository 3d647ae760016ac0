/* SPDX-License-Identifier: MIT */
/*
 * tap_demo: the smallest forwarder loop that embeds mirrord's tap (docs/embedding.md).
 *
 *     cc tap_demo.c $(pkg-config --cflags --libs mirrord) -o tap_demo
 *     ./tap_demo /run/mirrord/demo-q0.ring SESSION_ID RATE FRAMES [MAX_LEN] < go
 *
 * It creates a tap on a ring file in the daemon's runtime directory (the daemon attaches
 * the rings it finds there), sets the rule, prints "ready <ring path>", and waits for one
 * line on stdin (the daemon attached the ring).  Then it "receives" FRAMES frames in
 * bursts of 32, as an AF_XDP RX loop does: frames longer than a 3840-byte buffer arrive
 * as a chain of fragments, and so, for the sake of the example, does every tenth frame.
 * Per burst: the forwarding decision, then one mr_tap__offer_burst, then the RX buffers
 * would go back to the fill ring.  At the end it prints its counters as one line of
 * key=value and waits for stdin to close before removing the ring.
 *
 * Frame i (the test rebuilds the same bytes, tests/linux/test_tap_embed.py): 9014 bytes
 * when i % 100 == 5, else 60 + (i * 37) % 1455; Ethernet to 02:00:00:00:00:02 from
 * 02:00:00:00:00:01, EtherType 0x88b5, i as 4 bytes big-endian, then byte j = (i + j) & 0xff.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime under -std=c11 */
#include <mirrord/tap.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BURST 32
#define BUF 3840        /* the packet room of a 4 KiB AF_XDP chunk */
#define MAX_FRAGS 3     /* 9014 bytes = 3840 + 3840 + 1334 */

/* The forwarder's packet buffers (its UMEM): the tap reads them and never writes. */
static uint8_t umem[BURST][MAX_FRAGS][BUF];

static uint32_t frame_len(uint32_t i)
{
	return i % 100 == 5 ? 9014 : 60 + (i * 37) % 1455;
}

/* "Receive" frame i into slot s: its fragments, as the NIC would have written them. */
static uint32_t receive(uint32_t i, unsigned s, struct mr_tap_frag *frags)
{
	static uint8_t whole[9014];
	uint32_t len = frame_len(i);
	static const uint8_t hdr[14] = {2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x88, 0xb5};
	memcpy(whole, hdr, sizeof(hdr));
	whole[14] = (uint8_t)(i >> 24), whole[15] = (uint8_t)(i >> 16);
	whole[16] = (uint8_t)(i >> 8), whole[17] = (uint8_t)i;
	for (uint32_t j = 18; j < len; j++)
		whole[j] = (uint8_t)(i + j);
	/* cut points: every BUF bytes, or (every tenth frame) 14 and half-way */
	uint32_t cut[MAX_FRAGS + 1], n = 0;
	cut[n++] = 0;
	if (len > BUF) {
		for (uint32_t o = BUF; o < len; o += BUF)
			cut[n++] = o;
	} else if (i % 10 == 3) {
		cut[n++] = 14;
		cut[n++] = len / 2;
	}
	cut[n] = len;
	for (uint32_t k = 0; k < n; k++) {
		memcpy(umem[s][k], whole + cut[k], cut[k + 1] - cut[k]);
		frags[k] = (struct mr_tap_frag){.data = umem[s][k], .len = cut[k + 1] - cut[k]};
	}
	return n;
}

static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: tap_demo RING_PATH SESSION_ID RATE FRAMES [MAX_LEN]\n");
		return 2;
	}
	struct mr_tap_rule rule = {
		.session_id = (uint32_t)strtoul(argv[2], NULL, 0),
		.rate = (uint32_t)strtoul(argv[3], NULL, 0),
		.max_len = argc > 5 ? (uint32_t)strtoul(argv[5], NULL, 0) : 0,
	};
	uint32_t total = (uint32_t)strtoul(argv[4], NULL, 0);
	char err[256], line[64];

	/* one tap per binding (interface queue), owned by the thread that receives on it */
	struct mr_tap *tap;
	int r = mr_tap__create(&tap, argv[1], 0, "tap_demo", err, sizeof(err));
	if (r) {
		fprintf(stderr, "tap_demo: %s\n", err);
		return 1;
	}
	/* from any thread, at any time: the daemon's rule for this binding's ingress */
	r = mr_tap__set_rule(tap, &rule);
	if (r) {
		fprintf(stderr, "tap_demo: set_rule: %s\n", strerror(-r));
		mr_tap__destroy(tap);
		return 1;
	}
	printf("ready %s\n", mr_tap__ring_path(tap));
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin)) {
		mr_tap__destroy(tap);
		return 1;
	}

	/* the packet thread's RX loop */
	struct mr_tap_frag frags[BURST][MAX_FRAGS];
	struct mr_tap_frame frames[BURST];
	for (uint32_t i = 0; i < total;) {
		unsigned n = 0;
		for (; n < BURST && i < total; n++, i++) /* peek the RX ring */
			frames[n] = (struct mr_tap_frame){.frags = frags[n], .nfrags = receive(i, n, frags[n])};
		/* ... the forwarding decision, the copies into TX, as the forwarder does ... */
		/* then mirror: after forwarding, while the RX buffers are still ours */
		mr_tap__offer_burst(tap, frames, n, 1 /* ingress ifindex */, now_ns());
		/* ... and only now release the RX descriptors and refill the fill ring */
	}

	/* from any thread: counters (sampled == pushed + the three dropped_*) */
	struct mr_tap_counters c;
	mr_tap__counters(tap, &c);
	printf("seen=%llu sampled=%llu pushed=%llu dropped_ring_full=%llu dropped_no_ring=%llu "
	       "dropped_ring_lost=%llu rule_generation=%llu\n",
	       (unsigned long long)c.seen, (unsigned long long)c.sampled, (unsigned long long)c.pushed,
	       (unsigned long long)c.dropped_ring_full, (unsigned long long)c.dropped_no_ring,
	       (unsigned long long)c.dropped_ring_lost, (unsigned long long)c.rule_generation);
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin)) /* keep the ring until told */
		;
	mr_tap__destroy(tap); /* removes the ring file */
	return 0;
}
