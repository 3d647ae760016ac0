/* bench/remote.py's engine: VXLAN-encapsulated copies drained from a ring by mr_cons__drain
 * (the daemon's own C routine, DRAIN_ENCAP) beside a plain C sendmmsg(2) loop of same-size
 * UDP datagrams on a connected UDP socket, both to one UDP collector at COLLECTOR:4789 (a
 * socket that never reads, in another namespace across a veth, or on loopback: the receive
 * path then costs both rows the same).
 * usage: remote_bench SIZE ROUNDS SLICE_MS COLLECTOR [ROWS]
 * ROWS (default "encap,base,control") names the rows, each one slice per round, in an order
 * that turns every round; the ring is topped up (untimed) before each drain slice:
 *   encap    the drain (DRAIN_ENCAP), as the daemon runs it: a pool of connected UDP sockets
 *   base     a connected UDP socket, one cache-hot datagram of the encapsulated size
 *   control  a second, identical, baseline loop (how far the method is from 1.00)
 *   rawpre   ablation: prebuilt VXLAN datagrams on a connected raw IPPROTO_UDP socket
 *            (the kernel's raw path without the ring, the hash or the header building)
 *   rawun    ablation: the same, unconnected (sendto each datagram)
 *   basecold the baseline sending from a buffer the ring's size, in the ring's stride (as the
 *            drain does: each copy's bytes come from L3 or DRAM, not a cache-hot buffer)
 * Prints per round "round=R <row>=<pps> ...". */
#define _GNU_SOURCE
#include "mirrord/drain.h"
#include "mirrord/encap.h"
#include "mirrord/ring.h"

#include <arpa/inet.h>
#include <linux/filter.h>
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
#define MAXROWS 8

static double run_loop(int fd, struct mmsghdr *m, double slice)
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

/* the baseline over a cold buffer: each batch's datagrams are the next ones of a buffer the
 * size of the bench's ring, in the ring's stride (header 32 + the frame, 8-aligned) */
static double run_cold(int fd, struct mmsghdr *m, struct iovec *iov, uint8_t *buf, size_t bufsz,
		       unsigned stride, size_t *pos, double slice)
{
	double t0 = now(), end = t0 + slice, t;
	unsigned long long n = 0;
	while ((t = now()) < end) {
		for (unsigned i = 0; i < BATCH; i++) {
			if (*pos + stride > bufsz)
				*pos = 0;
			iov[i].iov_base = buf + *pos;
			*pos += stride;
		}
		int r = sendmmsg(fd, m, BATCH, MSG_DONTWAIT);
		if (r > 0)
			n += (unsigned)r;
	}
	return (double)n / (t - t0);
}

static int raw_socket(const struct sockaddr_in *col, int connected)
{
	int fd = socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK, IPPROTO_UDP), v = 4 << 20;
	struct sock_filter none = BPF_STMT(BPF_RET | BPF_K, 0);
	struct sock_fprog prog = {.len = 1, .filter = &none};
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v)))
		return -1;
	v = IP_PMTUDISC_DO;
	setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &v, sizeof(v));
	if (connected && connect(fd, (const struct sockaddr *)col, sizeof(*col)))
		return -1;
	return fd;
}

int main(int argc, char **argv)
{
	if (argc != 5 && argc != 6) {
		fprintf(stderr, "usage: remote_bench SIZE ROUNDS SLICE_MS COLLECTOR [ROWS]\n");
		return 2;
	}
	unsigned size = (unsigned)atoi(argv[1]), rounds = (unsigned)atoi(argv[2]);
	double slice = atof(argv[3]) / 1000.0;
	struct sockaddr_in col = {.sin_family = AF_INET, .sin_port = htons(4789)};
	if (inet_pton(AF_INET, argv[4], &col.sin_addr) != 1 || size < 64 || size > 9216)
		return 2;
	const char *names[MAXROWS];
	unsigned nrows = 0;
	char *rows = strdup(argc == 6 ? argv[5] : "encap,base,control");
	for (char *s = strtok(rows, ","); s && nrows < MAXROWS; s = strtok(NULL, ","))
		names[nrows++] = s;
	if (!strcmp(argv[4], "127.0.0.1")) { /* loopback: the collector is ours */
		int sink = socket(AF_INET, SOCK_DGRAM, 0), v = 4096;
		setsockopt(sink, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
		if (bind(sink, (struct sockaddr *)&col, sizeof(col))) {
			perror("bind collector");
			return 1;
		}
	}
	/* the baselines: connected UDP sockets, one cache-hot datagram of the encapsulated size;
	 * rawpre / rawun: the same bytes behind a UDP header we write */
	static uint8_t dgram[9216 + 16], rawdg[9216 + 32];
	struct mmsghdr m[BATCH], mraw[BATCH];
	struct iovec iov[BATCH], iovraw[BATCH];
	unsigned plen = size + 8; /* + VXLAN header: the same UDP payload */
	rawdg[0] = 0xc0, rawdg[1] = 0x01, rawdg[2] = 0x12, rawdg[3] = 0xb5; /* 49153 -> 4789 */
	rawdg[4] = (uint8_t)((plen + 8) >> 8), rawdg[5] = (uint8_t)(plen + 8);
	rawdg[8] = 0x08;
	for (unsigned i = 0; i < BATCH; i++) {
		iov[i] = (struct iovec){dgram, plen};
		iovraw[i] = (struct iovec){rawdg, plen + 8};
		memset(&m[i], 0, sizeof(m[i]));
		m[i].msg_hdr.msg_iov = &iov[i];
		m[i].msg_hdr.msg_iovlen = 1;
		memset(&mraw[i], 0, sizeof(mraw[i]));
		mraw[i].msg_hdr.msg_iov = &iovraw[i];
		mraw[i].msg_hdr.msg_iovlen = 1;
	}
	int fds[MAXROWS];
	struct mmsghdr *msgs[MAXROWS];
	for (unsigned k = 0; k < nrows; k++) {
		fds[k] = -1;
		msgs[k] = m;
		if (!strcmp(names[k], "base") || !strcmp(names[k], "control") || !strcmp(names[k], "basecold")) {
			fds[k] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
			int v = 4 << 20;
			setsockopt(fds[k], SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
			if (connect(fds[k], (struct sockaddr *)&col, sizeof(col))) {
				perror("connect");
				return 1;
			}
		} else if (!strcmp(names[k], "rawpre") || !strcmp(names[k], "rawun")) {
			int conn = !strcmp(names[k], "rawpre");
			fds[k] = raw_socket(&col, conn);
			if (fds[k] < 0) {
				perror("raw socket");
				return 1;
			}
			static struct mmsghdr mun[BATCH];
			static struct sockaddr_in rcol;
			rcol = col;
			rcol.sin_port = 0;
			msgs[k] = mraw;
			if (!conn) {
				memcpy(mun, mraw, sizeof(mun));
				for (unsigned i = 0; i < BATCH; i++) {
					mun[i].msg_hdr.msg_name = &rcol;
					mun[i].msg_hdr.msg_namelen = sizeof(rcol);
				}
				msgs[k] = mun;
			}
		} else if (strcmp(names[k], "encap")) {
			fprintf(stderr, "unknown row %s\n", names[k]);
			return 2;
		}
	}
	/* the encap: VXLAN to the same collector, through the drain (a pool of UDP sockets) */
	struct mr_encap_config cfg = {.kind = MR_ENCAP_VXLAN, .vni = 42, .ttl = -1, .dscp = -1};
	struct mr_encap *e = mr_encap__new(&cfg);
	char err[256] = "";
	if (!e || mr_encap__add(e, AF_INET, (const uint8_t *)&col.sin_addr) < 0 ||
	    mr_encap__open(e, NULL, 0, err, sizeof(err))) {
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
	size_t coldsz = 1u << 27, coldpos = 0;
	uint8_t *cold = malloc(coldsz);
	unsigned stride = (32 + size + 7) & ~7u;
	struct mmsghdr mc[BATCH];
	struct iovec iovc[BATCH];
	memcpy(mc, m, sizeof(mc));
	memcpy(iovc, iov, sizeof(iovc));
	for (unsigned i = 0; i < BATCH; i++)
		mc[i].msg_hdr.msg_iov = &iovc[i];
	if (!cold)
		return 1;
	memset(cold, 0x5a, coldsz);
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
		double rate[MAXROWS] = {0};
		for (unsigned k = 0; k < nrows; k++) {
			unsigned which = (k + r) % nrows;
			if (fds[which] < 0) { /* encap */
				for (unsigned i = 0;; i++) { /* top up: untimed */
					frame[34] = (uint8_t)i;
					frame[35] = (uint8_t)(i >> 8);
					meta.ts_ns = i;
					if (mr_prod__push(&p, frame, size, &meta))
						break;
				}
				mr_prod__submit(&p);
				double w = now() + 0.002;
				while (now() < w)
					mr_cons__drain(&c, &rt, &st, 1, 1024, &tot);
				uint64_t p0 = st.pkts;
				double t0 = now(), end = t0 + slice, t;
				int dry = 0;
				while ((t = now()) < end)
					if (mr_cons__drain(&c, &rt, &st, 1, 1024, &tot) == 0)
						dry = 1;
				if (dry)
					fprintf(stderr, "round %u: the ring ran dry (the rate is a floor)\n", r);
				rate[which] = (double)(st.pkts - p0) / (t - t0);
			} else if (!strcmp(names[which], "basecold")) {
				run_cold(fds[which], mc, iovc, cold, coldsz, stride, &coldpos, 0.002);
				rate[which] = run_cold(fds[which], mc, iovc, cold, coldsz, stride, &coldpos, slice);
			} else {
				run_loop(fds[which], msgs[which], 0.002);
				rate[which] = run_loop(fds[which], msgs[which], slice);
			}
		}
		printf("round=%u", r);
		for (unsigned k = 0; k < nrows; k++)
			printf(" %s=%.0f", names[k], rate[k]);
		printf("\n");
		fflush(stdout);
	}
	fprintf(stderr, "encap drops: busy %llu error %llu\n", (unsigned long long)st.drop_busy,
		(unsigned long long)st.drop_error);
	return 0;
}
