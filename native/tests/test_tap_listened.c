/* SPDX-License-Identifier: MIT */
/*
 * C tests of when_listened (MR_TAP_RULE_WHEN_LISTENED, the ring header's listened set:
 * ring.h mr_cons__set_listened / mr_prod__listened), built by
 * tests/unit/test_tap_native.py under ASan/UBSan and TSan.
 * Usage: test_tap_listened [all|stress] [bursts]
 *  - nobody listens: every sampled frame is skipped, the ring stays empty;
 *  - the session listed: copied; another session listed: skipped; a rule without the flag
 *    is copied whatever the set says; more sessions than fit: every one counts as listened;
 *  - an odd sequence (the consumer mid-write) reads as listened (copy when in doubt);
 *  - stress: a consumer thread flips the set while the packet thread offers bursts and
 *    drains; sampled == pushed + skipped_no_listener + drops at every step, per rule too.
 */
#define _GNU_SOURCE
#include "mirrord/ring.h"
#include "mirrord/tap.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#define CHECK(cond, ...) CHECK_THEN((void)0, cond, __VA_ARGS__)

#define SID 0x51
static uint8_t frame[64] = {0x02, 0, 0, 0, 0, 1, 0x04, 0, 0, 0, 0, 2, 0x08, 0x00};

static struct mr_tap *tap_with(uint32_t flags, struct mr_cons *c)
{
	struct mr_tap *t;
	char err[256];
	if (mr_tap__create(&t, NULL, 1 << 16, "listened", err, sizeof(err))) {
		fprintf(stderr, "create: %s\n", err);
		exit(1);
	}
	struct mr_tap_vlan_rule r = {.vid = 0, .flags = flags, .rule = {.session_id = SID, .rate = 1}};
	CHECK(mr_tap__set_rules(t, &r, 1) == 0, "set_rules with flags %u", flags);
	int fd, efd;
	if (mr_tap__ring_fds(t, &fd, &efd) || mr_cons__attach(c, fd, -2, err, sizeof(err))) {
		fprintf(stderr, "attach: %s\n", err);
		exit(1);
	}
	return t;
}

static unsigned offer(struct mr_tap *t, unsigned n)
{
	const void *d[32];
	uint32_t l[32];
	for (unsigned i = 0; i < n; i++)
		d[i] = frame, l[i] = sizeof(frame);
	return mr_tap__offer(t, d, l, n, 1, 1);
}

static uint64_t drain(struct mr_cons *c)
{
	struct mr_frame f[64];
	uint64_t corrupt = 0, n = 0;
	unsigned k;
	while ((k = mr_cons__peek(c, f, 64, &corrupt)) > 0) {
		for (unsigned i = 0; i < k; i++)
			CHECK(f[i].session_id == SID && f[i].cap_len == sizeof(frame), "record %u", i);
		n += k;
		mr_cons__release(c);
	}
	CHECK(corrupt == 0, "corrupt %lu", (unsigned long)corrupt);
	return n;
}

static void test_basic(void)
{
	struct mr_cons c;
	struct mr_tap *t = tap_with(MR_TAP_RULE_WHEN_LISTENED, &c);
	struct mr_tap_counters k;

	CHECK(offer(t, 10) == 0, "nobody listens: nothing pushed");
	CHECK(drain(&c) == 0, "the ring stays empty");
	mr_tap__counters(t, &k);
	CHECK(k.sampled == 10 && k.pushed == 0 && mr_tap__skipped_no_listener(t) == 10, "sampled %lu pushed %lu",
	      (unsigned long)k.sampled, (unsigned long)k.pushed);

	uint32_t ids[2] = {7, SID};
	mr_cons__set_listened(&c, ids, 2);
	CHECK(offer(t, 10) == 10, "listened: copied");
	CHECK(drain(&c) == 10, "10 records");
	mr_cons__set_listened(&c, ids, 1); /* another session only */
	CHECK(offer(t, 5) == 0, "another session listened: skipped");
	uint32_t many[MR_LISTENED_MAX + 1] = {0};
	mr_cons__set_listened(&c, many, MR_LISTENED_MAX + 1);
	CHECK(offer(t, 3) == 3, "more than fit: every session counts as listened");
	CHECK(drain(&c) == 3, "3 records");
	mr_cons__set_listened(&c, NULL, 0);
	/* a consumer caught mid-write: an odd sequence reads as listened */
	atomic_store(&c.hdr->listened_seq, atomic_load(&c.hdr->listened_seq) | 1);
	CHECK(offer(t, 2) == 2, "odd sequence: copied");
	CHECK(drain(&c) == 2, "2 records");
	mr_cons__set_listened(&c, NULL, 0);
	CHECK(offer(t, 4) == 0, "even again, nobody listed: skipped");

	mr_tap__counters(t, &k);
	uint64_t sk = mr_tap__skipped_no_listener(t);
	CHECK(k.sampled == 34 && k.pushed == 15 && sk == 19, "sampled %lu pushed %lu skipped %lu",
	      (unsigned long)k.sampled, (unsigned long)k.pushed, (unsigned long)sk);
	struct mr_tap_rule_counters rc;
	CHECK(mr_tap__rule_counters(t, &rc, 1) == 1, "one rule");
	CHECK(rc.sampled == 34 && rc.pushed == 15 && rc.skipped_no_listener == 19, "rule: skipped %lu",
	      (unsigned long)rc.skipped_no_listener);
	mr_cons__detach(&c);
	mr_tap__destroy(t);

	/* a rule without the flag ignores the set */
	t = tap_with(0, &c);
	CHECK(offer(t, 6) == 6, "not when_listened: copied though nobody is listed");
	CHECK(mr_tap__skipped_no_listener(t) == 0, "nothing skipped");
	mr_cons__detach(&c);
	mr_tap__destroy(t);

	/* flags this ABI does not define are refused */
	struct mr_tap *u;
	char err[64];
	CHECK(mr_tap__create(&u, NULL, 1 << 16, "x", err, sizeof(err)) == 0, "create");
	struct mr_tap_vlan_rule bad = {.flags = 0x2, .rule = {.session_id = SID}};
	CHECK(mr_tap__set_rules(u, &bad, 1) == -EINVAL, "unknown flag refused");
	mr_tap__destroy(u);
}

static atomic_int stop;
static struct mr_cons sc;

static void *flipper(void *arg)
{
	uint32_t on[1] = {SID};
	(void)arg;
	for (unsigned i = 0; !atomic_load(&stop); i++)
		mr_cons__set_listened(&sc, on, i & 1);
	return NULL;
}

static void test_stress(unsigned bursts)
{
	struct mr_tap *t = tap_with(MR_TAP_RULE_WHEN_LISTENED, &sc);
	pthread_t th;
	pthread_create(&th, NULL, flipper, NULL);
	uint64_t pushed = 0, drained = 0;
	for (unsigned b = 0; b < bursts; b++) {
		pushed += offer(t, 1 + b % 32);
		drained += drain(&sc);
		struct mr_tap_counters k;
		mr_tap__counters(t, &k);
		uint64_t sk = mr_tap__skipped_no_listener(t);
		CHECK(k.sampled == k.pushed + k.dropped_ring_full + sk, "burst %u: %lu != %lu + %lu + %lu", b,
		      (unsigned long)k.sampled, (unsigned long)k.pushed, (unsigned long)k.dropped_ring_full,
		      (unsigned long)sk);
	}
	atomic_store(&stop, 1);
	pthread_join(th, NULL);
	struct mr_tap_counters k;
	mr_tap__counters(t, &k);
	CHECK(drained == pushed && pushed == k.pushed, "drained %lu pushed %lu", (unsigned long)drained,
	      (unsigned long)pushed);
	CHECK(k.pushed > 0 && mr_tap__skipped_no_listener(t) > 0, "both happened");
	printf("stress: bursts>=%u pushed=%lu skipped=%lu\n", bursts, (unsigned long)k.pushed,
	       (unsigned long)mr_tap__skipped_no_listener(t));
	mr_cons__detach(&sc);
	mr_tap__destroy(t);
}

int main(int argc, char **argv)
{
	const char *what = argc > 1 ? argv[1] : "all";
	unsigned bursts = argc > 2 ? (unsigned)atoi(argv[2]) : 20000;
	if (!strcmp(what, "all"))
		test_basic();
	test_stress(bursts);
	return check_exit();
}
