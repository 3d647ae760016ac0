/* Baseline for bench/sink.py: a plain C loop of write(2) calls into a TAP device.
 * usage: tap_write IFNAME FRAME_LEN COUNT [STRIDE NFRAMES]
 *   without STRIDE every write sends the same (cache-hot) buffer; with it, write i sends
 *   the frame at offset (i mod NFRAMES)*STRIDE of a prefilled NFRAMES*STRIDE buffer, the
 *   memory a ring of the same records occupies.  Prints "ns=<elapsed> ok=<writes that
 *   succeeded>".  COUNT 0: print "ready" and write until killed (bench/sink.py lets it run
 *   in slices with SIGSTOP/SIGCONT and reads the TAP's rx counter). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 4 && argc != 6)
		return 2;
	size_t stride = argc == 6 ? (size_t)atol(argv[4]) : 0;
	size_t nframes = argc == 6 ? (size_t)atol(argv[5]) : 1;
	int len = atoi(argv[2]);
	long count = atol(argv[3]);
	int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	struct ifreq ifr = {0};
	strncpy(ifr.ifr_name, argv[1], IFNAMSIZ - 1);
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	if (fd < 0 || ioctl(fd, TUNSETIFF, &ifr) < 0) {
		perror("tap");
		return 1;
	}
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	struct ifreq up = {0};
	strncpy(up.ifr_name, argv[1], IFNAMSIZ - 1);
	ioctl(s, SIOCGIFFLAGS, &up);
	up.ifr_flags |= IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &up) < 0) {
		perror("up");
		return 1;
	}
	size_t span = stride ? stride * nframes : (size_t)len;
	unsigned char *buf = calloc(1, span);
	for (size_t off = 0; off + (size_t)len <= span; off += stride ? stride : span) {
		memset(buf + off, 0x02, 12);
		buf[off + 12] = 0x88, buf[off + 13] = 0xb5; /* local experimental ethertype */
	}
	if (count == 0) {
		printf("ready\n");
		fflush(stdout);
		for (size_t i = 0;; i = i + 1 == nframes ? 0 : i + 1)
			(void)!write(fd, buf + stride * i, (size_t)len);
	}
	struct timespec a, b;
	long ok = 0;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (size_t n = 0, i = 0; n < (size_t)count; n++, i = i + 1 == nframes ? 0 : i + 1)
		ok += write(fd, buf + stride * i, (size_t)len) == len;
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("ns=%lld ok=%ld\n", (long long)(b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec), ok);
	return 0;
}
