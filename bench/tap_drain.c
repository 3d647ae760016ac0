/* A pure C consumer for bench/sink.py: attaches to a ring file and drains it into a TAP
 * with mr_cons__drain (the daemon's own routine, minus Python and the event loop) for
 * SECONDS after a 0.3 s warm-up.  usage: tap_drain RING IFNAME SECONDS
 * Prints "ns=<window> pkts=<delivered in the window> idle_ns=<time spent in drain calls
 * that found the ring empty>" (idle time: the producer, not the TAP, set the pace).
 * SECONDS 0: print "ready" and drain until killed (bench/sink.py lets it run in slices
 * with SIGSTOP/SIGCONT and reads the TAP's rx counter). */
#define _GNU_SOURCE
#include "mirrord/drain.h"
#include "mirrord/ring.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>

static long long now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc != 4)
		return 2;
	int tap = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	struct ifreq ifr = {0};
	strncpy(ifr.ifr_name, argv[2], IFNAMSIZ - 1);
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	if (tap < 0 || ioctl(tap, TUNSETIFF, &ifr) < 0) {
		perror("tap");
		return 1;
	}
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	ioctl(s, SIOCGIFFLAGS, &ifr);
	ifr.ifr_flags |= IFF_UP;
	ioctl(s, SIOCSIFFLAGS, &ifr);
	int fd = open(argv[1], O_RDWR | O_CLOEXEC);
	struct mr_cons c;
	char err[256];
	if (fd < 0 || mr_cons__attach(&c, fd, -2, err, sizeof(err))) {
		fprintf(stderr, "tap_drain: %s\n", fd < 0 ? "open" : err);
		return 1;
	}
	struct mr_route rt = {.session_id = 0, .fd = tap, .mode = MR_DRAIN_WRITE};
	struct mr_drain_stats st = {0};
	struct mr_drain_totals tot = {0};
	if (atof(argv[3]) == 0) {
		printf("ready\n");
		fflush(stdout);
		for (;;)
			mr_cons__drain(&c, &rt, &st, 1, 1024, &tot);
	}
	long long warm = now_ns() + 300000000LL;
	while (now_ns() < warm)
		mr_cons__drain(&c, &rt, &st, 1, 1024, &tot);
	uint64_t p0 = st.pkts;
	long long t0 = now_ns(), end = t0 + (long long)(atof(argv[3]) * 1e9), t1;
	long long idle = 0, prev = t0;
	int was_empty = 0;
	while ((t1 = now_ns()) < end) {
		if (was_empty)
			idle += t1 - prev;
		prev = t1;
		was_empty = mr_cons__drain(&c, &rt, &st, 1, 1024, &tot) == 0;
	}
	printf("ns=%lld pkts=%llu idle_ns=%lld\n", t1 - t0, (unsigned long long)(st.pkts - p0), idle);
	mr_cons__detach(&c);
	return 0;
}
