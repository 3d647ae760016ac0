/* bench/remote.py's engine: VXLAN-encapsulated copies drained from a ring by mr_cons__drain
 * (the daemon's own C routine, DRAIN_ENCAP, raw socket) beside a plain C sendmmsg(2) loop
 * of same-size UDP datagrams on a connected UDP socket, both to one UDP collector on
 * 127.0.0.1:4789 (a socket that never reads: the receive path costs both the same).
 * usage: remote_bench SIZE ROUNDS SLICE_MS
 * The sinks take turns in one process, one slice each per round, in an order that turns
 * every round; the ring is topped up (untimed) before each encap slice.  Prints per round
 * "round=R encap=<pps> base=<pps> control=<pps>"; control is a second baseline loop. */
#define _GNU_SOURCE
#include "mirrord/drain.h"
#include "mirrord/encap.h"
#include "mirrord/ring.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

#define BATCH 64

static double run_base(int fd, struct mmsghdr *m, double slice)
{
	double t0 = now(), end = t0 + slice, t;
	unsigned long long n = 0;
	while ((t = now()) < end) {
		int r = sendmmsg(fd, m, BATCH, MSG_DONTWAIT);
		if (r > 0)
			n += (unsigned)r;
	}
	return (double)n / (t - t0);
}

int main(int argc, char **argv)
{
	if (argc != 4)
		return 2;
	unsigned size = (unsigned)atoi(argv[1]), rounds = (unsigned)atoi(argv[2]);
	double slice = atof(argv[3]) / 1000.0;
	struct sockaddr_in col = {.sin_family = AF_INET, .sin_port = htons(4789)};
	inet_pton(AF_INET, "127.0.0.1", &col.sin_addr);
	int sink = socket(AF_INET, SOCK_DGRAM, 0), one = 4096;
	setsockopt(sink, SOL_SOCKET, SO_RCVBUF, &one, sizeof(one));
	if (bind(sink, (struct sockaddr *)&col, sizeof(col))) {
		perror("bind collector");
		return 1;
	}
	/* the baselines: connected UDP sockets, one cache-hot datagram of the encapsulated size */
	int base[2];
	static uint8_t dgram[9216 + 16];
	struct mmsghdr m[BATCH];
	struct iovec iov[BATCH];
	for (unsigned i = 0; i < BATCH; i++) {
		iov[i] = (struct iovec){dgram, size + 8}; /* + VXLAN header: the same UDP payload */
		memset(&m[i], 0, sizeof(m[i]));
		m[i].msg_hdr.msg_iov = &iov[i];
		m[i].msg_hdr.msg_iovlen = 1;
	}
	for (int k = 0; k < 2; k++) {
		base[k] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
		int v = 4 << 20;
		setsockopt(base[k], SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
		if (connect(base[k], (struct sockaddr *)&col, sizeof(col))) {
			perror("connect");
			return 1;
		}
	}
	/* the encap: VXLAN to the same collector, through the drain */
	struct mr_encap_config cfg = {.kind = MR_ENCAP_VXLAN, .vni = 42, .ttl = -1, .dscp = -1};
	struct mr_encap *e = mr_encap__new(&cfg);
	uint8_t lo[4] = {127, 0, 0, 1};
	char err[256];
	if (!e || mr_encap__add(e, AF_INET, lo) < 0 || mr_encap__open(e, NULL, 0, err, sizeof(err))) {
		fprintf(stderr, "encap: %s\n", err);
		return 1;
	}
	struct mr_prod p;
	struct mr_cons c;
	if (mr_prod__create(&p, NULL, 1u << 27, 0, "bench", err, sizeof(err)) ||
	    mr_cons__attach(&c, p.fd, -2, err, sizeof(err))) {
		fprintf(stderr, "ring: %s\n", err);
		return 1;
	}
	static uint8_t frame[9216];
	memset(frame, 0x5a, sizeof(frame));
	/* Ethernet + IPv4 + UDP headers, ports varied per copy: the flow hash does real work */
	memcpy(frame, "\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00\x45\x00", 16);
	frame[23] = 17;
	struct mr_route rt = {.session_id = 0, .fd = mr_encap__fd(e, 0), .mode = MR_DRAIN_ENCAP, .encap = e};
	struct mr_drain_stats st = {0};
	struct mr_drain_totals tot = {0};
	struct mr_meta meta = {.wire_len = size, .session_id = 1};
	for (unsigned r = 0; r < rounds; r++) {
		double rate[3] = {0};
		for (unsigned k = 0; k < 3; k++) {
			unsigned which = (k + r) % 3;
			if (which == 0) {
				for (unsigned i = 0;; i++) { /* top up: untimed */
					frame[34] = (uint8_t)i;
					frame[35] = (uint8_t)(i >> 8);
					meta.ts_ns = i;
					if (mr_prod__push(&p, frame, size, &meta))
						break;
				}
				mr_prod__submit(&p);
				double w = now() + 0.002;
				uint64_t p0 = st.pkts;
				while (now() < w)
					mr_cons__drain(&c, &rt, &st, 1, 1024, &tot);
				p0 = st.pkts;
				double t0 = now(), end = t0 + slice, t;
				int dry = 0;
				while ((t = now()) < end)
					if (mr_cons__drain(&c, &rt, &st, 1, 1024, &tot) == 0)
						dry = 1;
				if (dry)
					fprintf(stderr, "round %u: the ring ran dry (the rate is a floor)\n", r);
				rate[0] = (double)(st.pkts - p0) / (t - t0);
			} else {
				run_base(base[which - 1], m, 0.002);
				rate[which] = run_base(base[which - 1], m, slice);
			}
		}
		printf("round=%u encap=%.0f base=%.0f control=%.0f\n", r, rate[0], rate[1], rate[2]);
		fflush(stdout);
	}
	fprintf(stderr, "encap drops: busy %llu error %llu\n", (unsigned long long)st.drop_busy,
		(unsigned long long)st.drop_error);
	return 0;
}
