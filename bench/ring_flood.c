/* A C producer for bench/sink.py: creates a ring file and pushes copies of one frame as
 * fast as it can for SECONDS, in batches of 32 (reserve x32, one submit), dropping when
 * the ring is full -- a forwarder mirroring at rate 1 faster than the daemon drains.
 * usage: ring_flood PATH FRAME_LEN SECONDS SESSION_ID [DATA_SIZE [fill]]  (SECONDS: unused by fill)
 * Prints "offered=N pushed=N dropped=N" when done; unlinks the ring on exit.
 * fill: build backlogs instead.  For each line read on stdin, push copies until the next
 * one would not fit and publish them with one submit (a consumer sees the whole backlog
 * at once), then print "ready backlog=N".  Exits at end of input.  The ring stays mapped
 * from one backlog to the next, so no run pays for allocating or freeing its pages. */
#define _GNU_SOURCE
#include "mirrord/ring.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Reserve and fill one copy of frame; 0 when it does not fit (counted as ring_full). */
static int offer(struct mr_prod *p, const uint8_t *frame, uint32_t len, uint32_t sid, uint64_t n)
{
	struct mr_rec *r = mr_prod__reserve(p, len, len);
	if (!r)
		return 0;
	r->ifindex = 1;
	r->session_id = sid;
	r->ts_ns = n;
	memcpy(mr_rec__data(r), frame, len);
	return 1;
}

int main(int argc, char **argv)
{
	if (argc < 5)
		return 2;
	uint32_t len = (uint32_t)atoi(argv[2]);
	double secs = atof(argv[3]);
	uint32_t sid = (uint32_t)strtoul(argv[4], NULL, 0);
	uint32_t data_size = argc > 5 ? (uint32_t)strtoul(argv[5], NULL, 0) : 0;
	int fill = argc > 6 && strcmp(argv[6], "fill") == 0;
	struct mr_prod p;
	char err[256];
	if (mr_prod__create(&p, argv[1], data_size, 0, "flood", err, sizeof(err))) {
		fprintf(stderr, "ring_flood: %s\n", err);
		return 1;
	}
	uint8_t frame[9216] = {0};
	memset(frame, 0x02, 12);
	frame[12] = 0x88, frame[13] = 0xb5;
	if (fill) {
		char line[64];
		while (fgets(line, sizeof(line), stdin)) {
			uint64_t n = 0;
			while (offer(&p, frame, len, sid, n))
				n++;
			mr_prod__submit(&p);
			printf("ready backlog=%llu\n", (unsigned long long)n);
			fflush(stdout);
		}
		mr_prod__destroy(&p, 1);
		return 0;
	}
	printf("ready\n");
	fflush(stdout);
	double end = now() + secs;
	uint64_t offered = 0;
	while (now() < end) {
		for (int i = 0; i < 32; i++, offered++)
			offer(&p, frame, len, sid, offered);
		mr_prod__submit(&p);
	}
	printf("offered=%llu pushed=%llu dropped=%llu\n", (unsigned long long)offered,
	       (unsigned long long)p.pushed_pkts, (unsigned long long)p.drop_full_pkts);
	mr_prod__destroy(&p, 1);
	return 0;
}
