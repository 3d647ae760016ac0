/* A C producer for bench/sink.py: creates a ring file and pushes copies of one frame as
 * fast as it can for SECONDS, in batches of 32 (reserve x32, one submit), dropping when
 * the ring is full -- a forwarder mirroring at rate 1 faster than the daemon drains.
 * usage: ring_flood PATH FRAME_LEN SECONDS SESSION_ID [DATA_SIZE]
 * Prints "offered=N pushed=N dropped=N" when done; unlinks the ring on exit. */
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

int main(int argc, char **argv)
{
	if (argc < 5)
		return 2;
	uint32_t len = (uint32_t)atoi(argv[2]);
	double secs = atof(argv[3]);
	uint32_t sid = (uint32_t)strtoul(argv[4], NULL, 0);
	uint32_t data_size = argc > 5 ? (uint32_t)strtoul(argv[5], NULL, 0) : 0;
	struct mr_prod p;
	char err[256];
	if (mr_prod__create(&p, argv[1], data_size, 0, "flood", err, sizeof(err))) {
		fprintf(stderr, "ring_flood: %s\n", err);
		return 1;
	}
	uint8_t frame[9216] = {0};
	memset(frame, 0x02, 12);
	frame[12] = 0x88, frame[13] = 0xb5;
	printf("ready\n");
	fflush(stdout);
	double end = now() + secs;
	uint64_t offered = 0;
	while (now() < end) {
		for (int i = 0; i < 32; i++, offered++) {
			struct mr_rec *r = mr_prod__reserve(&p, len, len);
			if (!r)
				continue;
			r->ifindex = 1;
			r->session_id = sid;
			r->ts_ns = offered;
			memcpy(mr_rec__data(r), frame, len);
		}
		mr_prod__submit(&p);
	}
	printf("offered=%llu pushed=%llu dropped=%llu\n", (unsigned long long)offered,
	       (unsigned long long)p.pushed_pkts, (unsigned long long)p.drop_full_pkts);
	mr_prod__destroy(&p, 1);
	return 0;
}
