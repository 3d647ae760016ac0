/* A paced C producer for bench/quiet.py: a forwarder mirroring a moderate rate.
 * usage: ring_paced DIR STEM NRINGS DATA_SIZE SESSION_ID FRAME_LEN
 * Creates DIR/STEM-<i>.ring for i < NRINGS, prints "ready", then for each line on stdin
 *   RATE SECONDS     offers RATE frames/s in total (0: as fast as it can) for SECONDS,
 *                    BATCH (8) frames per submit, batch after batch to the next ring
 *                    (round robin), each record stamped ts_ns = CLOCK_REALTIME at its batch;
 * and answers "offered=N pushed=N dropped=N wakeups=N ns=N" (this window's deltas; wakeups:
 * the eventfd writes the submits made, counted by mr_prod__kick).  Paced by absolute time:
 * it sleeps (clock_nanosleep, 50 us) while ahead, and catches up in a burst when late.
 * Unlinks its rings at end of input. */
#define _GNU_SOURCE
#include "mirrord/ring.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>

#define BATCH 8
#define MAX_RINGS 256

static uint64_t clock_ns(clockid_t id)
{
	struct timespec t;
	clock_gettime(id, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static struct mr_prod rings[MAX_RINGS];

int main(int argc, char **argv)
{
	if (argc < 7)
		return 2;
	unsigned n = (unsigned)atoi(argv[3]);
	uint32_t data_size = (uint32_t)strtoul(argv[4], NULL, 0);
	uint32_t sid = (uint32_t)strtoul(argv[5], NULL, 0);
	uint32_t len = (uint32_t)atoi(argv[6]);
	if (n < 1 || n > MAX_RINGS || len < 60 || len > 9216)
		return 2;
	prctl(PR_SET_TIMERSLACK, 1000UL); /* 1 us: the pacing sleeps are short */
	for (unsigned i = 0; i < n; i++) {
		char path[512], err[256];
		snprintf(path, sizeof(path), "%s/%s-%u.ring", argv[1], argv[2], i);
		if (mr_prod__create(&rings[i], path, data_size, 0, "paced", err, sizeof(err))) {
			fprintf(stderr, "ring_paced: %s\n", err);
			return 1;
		}
	}
	uint8_t frame[9216] = {0};
	memset(frame, 0x02, 12);
	frame[12] = 0x88, frame[13] = 0xb5;
	printf("ready\n");
	fflush(stdout);

	char line[128];
	unsigned next = 0;
	while (fgets(line, sizeof(line), stdin)) {
		double rate = 0, secs = 0;
		if (sscanf(line, "%lf %lf", &rate, &secs) != 2)
			break;
		uint64_t w0 = 0, p0 = 0, d0 = 0;
		for (unsigned i = 0; i < n; i++)
			w0 += rings[i].wakeups, p0 += rings[i].pushed_pkts, d0 += rings[i].drop_full_pkts;
		uint64_t start = clock_ns(CLOCK_MONOTONIC), end = start + (uint64_t)(secs * 1e9);
		uint64_t offered = 0, now = start;
		while (now < end) {
			uint64_t due = rate > 0 ? (uint64_t)((double)(now - start) * rate / 1e9) : offered + 64 * BATCH;
			while (offered + BATCH <= due) {
				struct mr_prod *p = &rings[next];
				next = next + 1 == n ? 0 : next + 1;
				uint64_t ts = clock_ns(CLOCK_REALTIME);
				for (int k = 0; k < BATCH; k++) {
					struct mr_rec *r = mr_prod__reserve(p, len, len);
					if (r) {
						r->ifindex = 1;
						r->session_id = sid;
						r->ts_ns = ts;
						memcpy(mr_rec__data(r), frame, len);
					}
				}
				mr_prod__submit(p);
				offered += BATCH;
			}
			if (rate > 0) {
				struct timespec t = {0, 50000};
				clock_nanosleep(CLOCK_MONOTONIC, 0, &t, NULL);
			}
			now = clock_ns(CLOCK_MONOTONIC);
		}
		uint64_t w1 = 0, p1 = 0, d1 = 0;
		for (unsigned i = 0; i < n; i++)
			w1 += rings[i].wakeups, p1 += rings[i].pushed_pkts, d1 += rings[i].drop_full_pkts;
		printf("offered=%llu pushed=%llu dropped=%llu wakeups=%llu ns=%llu\n", (unsigned long long)offered,
		       (unsigned long long)(p1 - p0), (unsigned long long)(d1 - d0),
		       (unsigned long long)(w1 - w0), (unsigned long long)(now - start));
		fflush(stdout);
	}
	for (unsigned i = 0; i < n; i++)
		mr_prod__destroy(&rings[i], 1);
	return 0;
}
