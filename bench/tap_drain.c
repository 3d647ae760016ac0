/* A pure C consumer for bench/sink.py: attaches to a ring file and drains it into a TAP
 * with mr_cons__drain (the daemon's own routine, minus Python and the event loop) for
 * SECONDS after a 0.3 s warm-up.  usage: tap_drain RING IFNAME SECONDS
 * Prints "ns=<window> pkts=<delivered in the window>". */
#define _GNU_SOURCE
#include "mirrord/ring.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <stdlib.h>
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
	long long warm = now_ns() + 300000000LL;
	while (now_ns() < warm)
		mr_cons__drain(&c, &rt, &st, 1, 1024, &tot);
	uint64_t p0 = st.pkts;
	long long t0 = now_ns(), end = t0 + (long long)(atof(argv[3]) * 1e9), t1;
	while ((t1 = now_ns()) < end)
		mr_cons__drain(&c, &rt, &st, 1, 1024, &tot);
	printf("ns=%lld pkts=%llu\n", t1 - t0, (unsigned long long)(st.pkts - p0));
	mr_cons__detach(&c);
	return 0;
}
