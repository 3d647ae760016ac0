/* SPDX-License-Identifier: MIT */
/*
 * C tests of the embeddable tap (include/mirrord/tap.h), built by
 * tests/unit/test_tap_native.py with -fsanitize=address,undefined (every test) and with
 * -fsanitize=thread (the rule-swap stress).  Usage: test_tap [all|stress] [bursts]
 */
#define _GNU_SOURCE
#include "mirrord/ring.h"
#include "mirrord/tap.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#define CHECK(cond, ...) CHECK_THEN((void)0, cond, __VA_ARGS__)

static uint8_t pat(uint32_t i, uint32_t j)
{
	return (uint8_t)(i * 31 + j);
}

/* frame i: len bytes of pat(i, .), in nfrags pieces */
struct tframe {
	uint8_t bytes[9216];
	struct mr_tap_frag frags[4];
	struct mr_tap_frame f;
};

static void make(struct tframe *t, uint32_t i, uint32_t len, uint32_t nfrags)
{
	for (uint32_t j = 0; j < len; j++)
		t->bytes[j] = pat(i, j);
	uint32_t off = 0;
	for (uint32_t k = 0; k < nfrags; k++) {
		uint32_t l = k + 1 < nfrags ? len / nfrags : len - off;
		t->frags[k] = (struct mr_tap_frag){.data = t->bytes + off, .len = l};
		off += l;
	}
	t->f = (struct mr_tap_frame){.frags = t->frags, .nfrags = nfrags};
}

static struct mr_cons attach(struct mr_tap *t)
{
	struct mr_cons c;
	int fd, efd;
	char err[256];
	if (mr_tap__ring_fds(t, &fd, &efd) || mr_cons__attach(&c, fd, -2, err, sizeof(err))) {
		fprintf(stderr, "attach: %s\n", err);
		exit(1);
	}
	return c;
}

static struct tframe fr[64];

/* rate 7 over 1000 frames in uneven bursts: exactly k % 7 == 0, the bytes gathered */
static void test_rate_and_gather(void)
{
	struct mr_tap *t;
	char err[256];
	CHECK(mr_tap__create(&t, NULL, 1 << 22, "t", err, sizeof(err)) == 0, "%s", err);
	struct mr_tap_rule r = {.session_id = 9, .rate = 7};
	CHECK(mr_tap__set_rule(t, &r) == 0, "set_rule");
	CHECK(mr_tap__ring_path(t) == NULL, "a memfd ring has no path");
	struct mr_cons c = attach(t);
	uint32_t i = 0, burst = 1, got = 0;
	while (i < 1000) {
		unsigned n = 0;
		struct mr_tap_frame f[64];
		for (; n < burst && i < 1000; n++, i++) {
			make(&fr[n], i, 60 + i % 1400, 1 + i % 3);
			f[n] = fr[n].f;
		}
		mr_tap__offer_burst(t, f, n, 4, 1000 + i);
		burst = burst % 63 + 1;
		struct mr_frame m[64];
		uint64_t corrupt = 0;
		unsigned k = mr_cons__peek(&c, m, 64, &corrupt);
		for (unsigned j = 0; j < k; j++, got++) {
			uint32_t idx = got * 7, len = 60 + idx % 1400, bad = 0;
			CHECK(m[j].cap_len == len && m[j].wire_len == len && m[j].session_id == 9 && m[j].ifindex == 4,
			      "record %u: cap %u wire %u sid %u", got, m[j].cap_len, m[j].wire_len, m[j].session_id);
			for (uint32_t b = 0; b < len && b < m[j].cap_len; b++)
				bad += m[j].data[b] != pat(idx, b);
			CHECK(bad == 0, "record %u (frame %u): %u bytes differ", got, idx, bad);
		}
		mr_cons__release(&c);
	}
	struct mr_tap_counters k;
	mr_tap__counters(t, &k);
	CHECK(k.seen == 1000 && k.sampled == 143 && k.pushed == 143 && got == 143 && k.rule_generation == 1,
	      "seen %lu sampled %lu pushed %lu got %u gen %lu", (unsigned long)k.seen, (unsigned long)k.sampled,
	      (unsigned long)k.pushed, got, (unsigned long)k.rule_generation);
	mr_cons__detach(&c);
	mr_tap__destroy(t);
}

/* run_length, max_len across a fragment boundary, session 0, no ring, a full ring */
static void test_rules_and_drops(void)
{
	struct mr_tap *t;
	char err[256];
	CHECK(mr_tap__create(&t, NULL, 64 * 1024, "t", err, sizeof(err)) == 0, "%s", err);
	struct mr_tap_frame f[64];
	for (unsigned n = 0; n < 64; n++) {
		make(&fr[n], n, 3000, 3); /* 1000 + 1000 + 1000 */
		f[n] = fr[n].f;
	}
	/* session 0: seen, nothing else */
	CHECK(mr_tap__offer_burst(t, f, 10, 1, 0) == 0, "session 0 pushed");
	struct mr_tap_rule r = {.session_id = 3, .rate = 10, .run_length = 2, .max_len = 1500};
	mr_tap__set_rule(t, &r);
	struct mr_cons c = attach(t);
	CHECK(mr_tap__offer_burst(t, f, 20, 1, 0) == 6, "rate 10 run 2 over 20: k 0,1,2,10,11,12");
	struct mr_frame m[8];
	uint64_t corrupt = 0;
	unsigned k = mr_cons__peek(&c, m, 8, &corrupt);
	CHECK(k == 6, "records %u", k);
	static const uint32_t want[] = {0, 1, 2, 10, 11, 12};
	for (unsigned j = 0; j < k && j < 6; j++) {
		CHECK(m[j].cap_len == 1500 && m[j].wire_len == 3000 && (m[j].flags & MR_REC_F_TRUNCATED),
		      "truncated record %u: cap %u wire %u flags %x", j, m[j].cap_len, m[j].wire_len, m[j].flags);
		uint32_t bad = 0;
		for (uint32_t b = 0; b < 1500; b++)
			bad += m[j].data[b] != pat(want[j], b);
		CHECK(bad == 0, "record %u: %u bytes differ", j, bad);
	}
	mr_cons__release(&c);
	/* rate 1 into a 64 KiB ring never drained: fills, every copy accounted for */
	r = (struct mr_tap_rule){.session_id = 3, .rate = 1};
	mr_tap__set_rule(t, &r);
	for (int b = 0; b < 10; b++)
		mr_tap__offer_burst(t, f, 64, 1, 0);
	struct mr_tap_counters q;
	mr_tap__counters(t, &q);
	CHECK(q.seen == 670 && q.sampled == 646 && q.dropped_ring_full > 0 &&
	      q.sampled == q.pushed + q.dropped_ring_full && q.rule_generation == 2,
	      "seen %lu sampled %lu pushed %lu full %lu", (unsigned long)q.seen, (unsigned long)q.sampled,
	      (unsigned long)q.pushed, (unsigned long)q.dropped_ring_full);
	mr_cons__detach(&c);
	mr_tap__destroy(t);

	/* no ring: counted, never touched */
	CHECK(mr_tap__create_no_ring(&t) == 0, "create_no_ring");
	int fd, efd;
	CHECK(mr_tap__ring_fds(t, &fd, &efd) == -ENOENT, "no ring: ring_fds");
	CHECK(mr_tap__ring_lost(t, err, sizeof(err)) == -ENOENT, "no ring: ring_lost");
	mr_tap__set_rule(t, &r);
	CHECK(mr_tap__offer_burst(t, f, 64, 1, 0) == 0, "no ring pushed");
	mr_tap__counters(t, &q);
	CHECK(q.sampled == 64 && q.dropped_no_ring == 64 && q.pushed == 0, "no_ring %lu", (unsigned long)q.dropped_no_ring);
	CHECK(mr_tap__set_rule(t, NULL) == -EINVAL, "NULL rule");
	mr_tap__destroy(t);
	mr_tap__destroy(NULL);
}

/* a ring file truncated under the tap: copies count as ring_lost, nothing crashes */
static void test_ring_lost(void)
{
	char dir[] = "/tmp/test_tap.XXXXXX", path[64], err[256], why[128] = "";
	CHECK(mkdtemp(dir) != NULL, "mkdtemp");
	snprintf(path, sizeof(path), "%s/a.ring", dir);
	struct mr_tap *t;
	CHECK(mr_tap__create(&t, path, 64 * 1024, "lost", err, sizeof(err)) == 0, "%s", err);
	CHECK(mr_tap__ring_path(t) && !strcmp(mr_tap__ring_path(t), path), "ring_path");
	struct mr_tap_rule r = {.session_id = 1, .rate = 1};
	mr_tap__set_rule(t, &r);
	struct mr_tap_frame f[8];
	for (unsigned n = 0; n < 8; n++) {
		make(&fr[n], n, 100, 1);
		f[n] = fr[n].f;
	}
	CHECK(mr_tap__offer_burst(t, f, 8, 1, 0) == 8, "before truncation");
	CHECK(truncate(path, 4096) == 0, "truncate");
	mr_tap__offer_burst(t, f, 8, 1, 0); /* faults, the guard replaces the mapping */
	mr_tap__offer_burst(t, f, 8, 1, 0);
	struct mr_tap_counters q;
	mr_tap__counters(t, &q);
	CHECK(mr_tap__ring_lost(t, why, sizeof(why)) == 1 && why[0], "ring_lost: '%s'", why);
	CHECK(q.sampled == 24 && q.pushed + q.dropped_ring_full + q.dropped_ring_lost == 24 && q.dropped_ring_lost >= 8,
	      "pushed %lu full %lu lost %lu", (unsigned long)q.pushed, (unsigned long)q.dropped_ring_full,
	      (unsigned long)q.dropped_ring_lost);
	mr_tap__destroy(t);
	CHECK(access(path, F_OK) != 0, "destroy removes the ring file");
	rmdir(dir);
}

/* rules swapped from another thread while the packet thread offers: every record carries
 * a session of a rule that was set, every copy is accounted for, no rule is read freed */
static struct mr_tap *st;
static _Atomic int stop;

static void *swapper(void *arg)
{
	for (uint32_t g = 0; g < 2000; g++) {
		struct mr_tap_rule r = {.session_id = 100 + g % 5, .rate = 1 + g % 4, .max_len = 64 + g % 200};
		mr_tap__set_rule(st, &r);
	}
	atomic_store(&stop, 1);
	return NULL;
}

static void test_stress(unsigned bursts)
{
	char err[256];
	CHECK(mr_tap__create(&st, NULL, 1 << 20, "stress", err, sizeof(err)) == 0, "%s", err);
	struct mr_cons c = attach(st);
	struct mr_tap_frame f[32];
	for (unsigned n = 0; n < 32; n++) {
		make(&fr[n], n, 300, 2);
		f[n] = fr[n].f;
	}
	pthread_t th;
	pthread_create(&th, NULL, swapper, NULL);
	uint64_t records = 0;
	for (unsigned b = 0; b < bursts || !atomic_load(&stop); b++) {
		mr_tap__offer_burst(st, f, 32, 1, b);
		struct mr_frame m[64];
		uint64_t corrupt = 0;
		unsigned k;
		while ((k = mr_cons__peek(&c, m, 64, &corrupt)) > 0) {
			for (unsigned j = 0; j < k; j++) {
				CHECK(m[j].session_id >= 100 && m[j].session_id < 105 && m[j].cap_len <= 263,
				      "record: sid %u cap %u", m[j].session_id, m[j].cap_len);
				records++;
			}
			mr_cons__release(&c);
		}
		CHECK(corrupt == 0, "corrupt");
	}
	pthread_join(th, NULL);
	mr_tap__offer_burst(st, NULL, 0, 1, 0); /* take up the last rule */
	struct mr_tap_counters q;
	mr_tap__counters(st, &q);
	CHECK(q.rule_generation == 2000 && q.sampled == q.pushed + q.dropped_ring_full && q.pushed == records,
	      "gen %lu sampled %lu pushed %lu full %lu records %lu", (unsigned long)q.rule_generation,
	      (unsigned long)q.sampled, (unsigned long)q.pushed, (unsigned long)q.dropped_ring_full,
	      (unsigned long)records);
	printf("stress: bursts>=%u sampled=%lu pushed=%lu full=%lu\n", bursts, (unsigned long)q.sampled,
	       (unsigned long)q.pushed, (unsigned long)q.dropped_ring_full);
	mr_cons__detach(&c);
	mr_tap__destroy(st);
}

int main(int argc, char **argv)
{
	const char *what = argc > 1 ? argv[1] : "all";
	unsigned bursts = argc > 2 ? (unsigned)atoi(argv[2]) : 20000;
	if (!strcmp(what, "all")) {
		test_rate_and_gather();
		test_rules_and_drops();
		test_ring_lost();
	}
	test_stress(bursts);
	return check_exit();
}
