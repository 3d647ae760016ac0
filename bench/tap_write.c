/* Baseline for bench/sink.py: a plain C loop of write(2) calls into a TAP device.
 * usage: tap_write IFNAME FRAME_LEN COUNT [STRIDE]
 *   without STRIDE every write sends the same (cache-hot) buffer; with it, frame i is read
 *   from offset i*STRIDE of a prefilled COUNT*STRIDE buffer, the memory a ring of the same
 *   records would occupy.  Prints "ns=<elapsed> ok=<writes that succeeded>". */
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
	if (argc != 4 && argc != 5)
		return 2;
	size_t stride = argc == 5 ? (size_t)atol(argv[4]) : 0;
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
	size_t span = stride ? stride * (size_t)count : (size_t)len;
	unsigned char *buf = calloc(1, span);
	for (size_t off = 0; off + (size_t)len <= span; off += stride ? stride : span) {
		memset(buf + off, 0x02, 12);
		buf[off + 12] = 0x88, buf[off + 13] = 0xb5; /* local experimental ethertype */
	}
	struct timespec a, b;
	long ok = 0;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < count; i++)
		ok += write(fd, buf + (stride ? stride * (size_t)i : 0), (size_t)len) == len;
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("ns=%lld ok=%ld\n", (long long)(b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec), ok);
	return 0;
}
