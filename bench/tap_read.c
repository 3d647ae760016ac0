/* The mirror end of `tc ... action mirred egress mirror dev IFNAME` in bench/forward.py:
 * a plain C loop of read(2) calls on a TAP device, the least a tool reading a mirror TAP
 * does.  usage: tap_read IFNAME
 *   creates (or attaches to) TAP IFNAME, prints "ready" and reads frames until killed.
 *   Without a reader the TAP has no carrier and tc mirred drops every copy; with one,
 *   the TAP's tx counter counts the copies that reached the reader.  The device is left
 *   down: the bench turns address generation off and brings it up, so the kernel sends
 *   nothing of its own through it. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: tap_read IFNAME\n");
		return 2;
	}
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	struct ifreq ifr = {0};
	strncpy(ifr.ifr_name, argv[1], IFNAMSIZ - 1);
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	if (fd < 0 || ioctl(fd, TUNSETIFF, &ifr) < 0) {
		perror("tap_read: tap");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	static char buf[65536];
	for (;;) {
		if (read(fd, buf, sizeof(buf)) < 0 && errno != EINTR) {
			perror("tap_read: read");
			return 1;
		}
	}
}
