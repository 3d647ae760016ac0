/* SPDX-License-Identifier: MIT */
/*
 * C tests of the tap's VLAN table (include/mirrord/tap.h, mr_tap__set_rules), built by
 * tests/unit/test_tap_native.py with -fsanitize=address,undefined (every test) and
 * with -fsanitize=thread (the table swap under load).  Usage: test_tap_vlan [all|stress] [bursts]
 */
#define _GNU_SOURCE
#include "mirrord/ring.h"
#include "mirrord/tap.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#define CHECK(cond, ...) CHECK_THEN((void)0, cond, __VA_ARGS__)

/* A frame: dst, src, then the tags (tpid, vid) given, then 0x0800 and a payload whose
 * bytes carry the frame's number i. */
struct tframe {
	uint8_t b[256];
	uint32_t len;
};

static void make(struct tframe *f, uint32_t i, uint16_t tpid1, uint16_t vid1, uint16_t tpid2, uint16_t vid2)
{
	uint8_t *p = f->b;
	memset(p, 0, 12);
	p[0] = 0x02, p[6] = 0x04;
	p += 12;
	if (tpid1) {
		*p++ = tpid1 >> 8, *p++ = tpid1 & 0xff, *p++ = (uint8_t)(0xa0 | vid1 >> 8), *p++ = vid1 & 0xff;
		if (tpid2)
			*p++ = tpid2 >> 8, *p++ = tpid2 & 0xff, *p++ = vid2 >> 8, *p++ = vid2 & 0xff;
	}
	*p++ = 0x08, *p++ = 0x00;
	for (int j = 0; j < 46; j++)
		*p++ = (uint8_t)(i * 7 + (uint32_t)j);
	f->len = (uint32_t)(p - f->b);
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

static int find(const struct mr_tap_rule_counters *rc, int n, uint32_t vid, uint32_t sid)
{
	for (int i = 0; i < n; i++)
		if (rc[i].vid == vid && rc[i].session_id == sid)
			return i;
	return -1;
}

/* frame i of the mix: kind i % 5 = untagged, VID 100 (0x8100), VID 200 (0x8100), QinQ
 * (0x88a8 VID 100 over 0x8100 VID 7), QinQ S-tag VID 300 over 0x8100 VID 100 */
static uint32_t kind_of(uint32_t i)
{
	return i % 5;
}
static void make_mix(struct tframe *f, uint32_t i)
{
	switch (kind_of(i)) {
	case 0: make(f, i, 0, 0, 0, 0); break;
	case 1: make(f, i, 0x8100, 100, 0, 0); break;
	case 2: make(f, i, 0x8100, 200, 0, 0); break;
	case 3: make(f, i, 0x88a8, 100, 0x8100, 7); break;
	default: make(f, i, 0x88a8, 300, 0x8100, 100); break;
	}
}

/* VID dispatch: VID 100 (802.1Q and the QinQ S-tag) to session 100's rule, every other
 * frame (untagged, VID 200, S-tag 300 whose inner tag is 100) to the parent's; the bytes
 * intact, tags and all; rates exact per rule; per-rule counters add up to the totals */
static void test_dispatch(void)
{
	struct mr_tap *t;
	char err[256];
	CHECK(mr_tap__create(&t, NULL, 1 << 22, "v", err, sizeof(err)) == 0, "%s", err);
	struct mr_tap_vlan_rule rules[2] = {
		{.vid = 100, .rule = {.session_id = 100, .rate = 3}},
		{.vid = 0, .rule = {.session_id = 1, .rate = 2}},
	};
	CHECK(mr_tap__set_rules(t, rules, 2) == 0, "set_rules");
	struct mr_cons c = attach(t);
	static struct tframe fr[1000];
	const void *data[64];
	uint32_t len[64];
	/* which frames each rule sampled, in order: rule 100 every 3rd of its own, parent every 2nd */
	uint32_t want100[1000], want1[1000], n100 = 0, n1 = 0, seen100 = 0, seen1 = 0;
	for (uint32_t i = 0; i < 1000; i++) {
		make_mix(&fr[i], i);
		uint32_t k = kind_of(i);
		if (k == 1 || k == 3) {
			if (seen100++ % 3 == 0)
				want100[n100++] = i;
		} else if (seen1++ % 2 == 0) {
			want1[n1++] = i;
		}
	}
	uint32_t got100 = 0, got1 = 0, i = 0, burst = 1;
	while (i < 1000) {
		unsigned n = 0;
		for (; n < burst && i < 1000; n++, i++)
			data[n] = fr[i].b, len[n] = fr[i].len;
		mr_tap__offer(t, data, len, n, 5, i);
		burst = burst % 64 + 1;
		struct mr_frame m[64];
		uint64_t corrupt = 0;
		unsigned k = mr_cons__peek(&c, m, 64, &corrupt);
		for (unsigned j = 0; j < k; j++) {
			uint32_t idx;
			if (m[j].session_id == 100) {
				CHECK(got100 < n100, "too many records of session 100");
				idx = got100 < n100 ? want100[got100] : 0;
				got100++;
			} else {
				CHECK(m[j].session_id == 1 && got1 < n1, "record of session %u", m[j].session_id);
				idx = got1 < n1 ? want1[got1] : 0;
				got1++;
			}
			CHECK(m[j].cap_len == fr[idx].len && !memcmp(m[j].data, fr[idx].b, fr[idx].len),
			      "record of session %u: not frame %u byte for byte", m[j].session_id, idx);
		}
		mr_cons__release(&c);
	}
	CHECK(got100 == n100 && n100 == 134 && got1 == n1 && n1 == 300, "session 100: %u of %u; parent: %u of %u",
	      got100, n100, got1, n1);
	struct mr_tap_rule_counters rc[4];
	int nr = mr_tap__rule_counters(t, rc, 4);
	int a = find(rc, nr, 100, 100), b = find(rc, nr, 0, 1);
	CHECK(nr == 2 && a >= 0 && b >= 0, "rules in force: %d", nr);
	if (a >= 0 && b >= 0) {
		CHECK(rc[a].seen == 400 && rc[a].sampled == 134 && rc[a].pushed == 134 && rc[a].filtered == 0,
		      "VID 100: seen %lu sampled %lu", (unsigned long)rc[a].seen, (unsigned long)rc[a].sampled);
		CHECK(rc[b].seen == 600 && rc[b].sampled == 300 && rc[b].pushed == 300, "parent: seen %lu sampled %lu",
		      (unsigned long)rc[b].seen, (unsigned long)rc[b].sampled);
	}
	struct mr_tap_counters q;
	mr_tap__counters(t, &q);
	CHECK(q.seen == 1000 && q.sampled == 434 && q.pushed == 434, "totals: seen %lu sampled %lu",
	      (unsigned long)q.seen, (unsigned long)q.sampled);

	/* no parent session: VID 100 alone; others not mirrored, not counted by any rule */
	struct mr_tap_vlan_rule only[1] = {{.vid = 100, .rule = {.session_id = 100, .rate = 3}}};
	CHECK(mr_tap__set_rules(t, only, 1) == 0, "set_rules VID 100 only");
	unsigned pushed = 0;
	for (i = 0; i < 1000; i += 50) {
		for (unsigned j = 0; j < 50; j++)
			data[j] = fr[i + j].b, len[j] = fr[i + j].len;
		pushed += mr_tap__offer(t, data, len, 50, 5, i);
	}
	nr = mr_tap__rule_counters(t, rc, 4);
	a = find(rc, nr, 100, 100);
	/* the same (vid, session): k and counters go on (400 seen, next hit at k 402) */
	CHECK(nr == 1 && a >= 0 && rc[a].seen == 800 && rc[a].sampled == 267 && pushed == 133,
	      "VID 100 only: %d rules, seen %lu sampled %lu, pushed %u", nr, a >= 0 ? (unsigned long)rc[a].seen : 0,
	      a >= 0 ? (unsigned long)rc[a].sampled : 0, pushed);
	mr_cons__detach(&c);
	mr_tap__destroy(t);
}

/* filter after dispatch, before sampling, with no fallback to the parent: VID 100's filter
 * takes only QinQ frames (the first tag 0x88a8); the 802.1Q VID 100 frames it rejects are
 * not the parent's */
static void test_filter_no_fallback(void)
{
	struct mr_tap *t;
	CHECK(mr_tap__create_no_ring(&t) == 0, "no ring");
	/* ldh [12]; jeq #0x88a8, keep, drop */
	struct mr_tap_insn prog[] = {{0x28, 0, 0, 12}, {0x15, 0, 1, 0x88a8}, {0x06, 0, 0, 65535}, {0x06, 0, 0, 0}};
	struct mr_tap_vlan_rule rules[2] = {
		{.vid = 0, .rule = {.session_id = 1, .rate = 1}},
		{.vid = 100, .rule = {.session_id = 100, .rate = 1}, .filter = prog, .filter_len = 4},
	};
	CHECK(mr_tap__set_rules(t, rules, 2) == 0, "set_rules with a filter");
	static struct tframe fr[500];
	const void *data[500];
	uint32_t len[500];
	for (uint32_t i = 0; i < 500; i++) {
		make_mix(&fr[i], i);
		data[i] = fr[i].b, len[i] = fr[i].len;
	}
	mr_tap__offer(t, data, len, 500, 1, 0);
	struct mr_tap_rule_counters rc[4];
	int nr = mr_tap__rule_counters(t, rc, 4);
	int a = find(rc, nr, 100, 100), b = find(rc, nr, 0, 1);
	CHECK(a >= 0 && b >= 0, "two rules");
	if (a >= 0 && b >= 0) {
		CHECK(rc[a].seen == 200 && rc[a].filtered == 100 && rc[a].sampled == 100 && rc[a].dropped_no_ring == 100,
		      "VID 100: seen %lu filtered %lu sampled %lu", (unsigned long)rc[a].seen,
		      (unsigned long)rc[a].filtered, (unsigned long)rc[a].sampled);
		CHECK(rc[b].seen == 300 && rc[b].sampled == 300, "parent: seen %lu (none of VID 100's filtered)",
		      (unsigned long)rc[b].seen);
	}
	CHECK(mr_tap__filtered(t) == 100, "filtered %lu", (unsigned long)mr_tap__filtered(t));
	mr_tap__destroy(t);
}

/* refusals: VID 4095, a VID twice, flags, 65 VID rules; 64 VID rules and a default are fine,
 * and a frame of each VID lands on its own rule */
static void test_bounds(void)
{
	struct mr_tap *t;
	CHECK(mr_tap__create_no_ring(&t) == 0, "no ring");
	struct mr_tap_vlan_rule r[66];
	memset(r, 0, sizeof(r));
	r[0] = (struct mr_tap_vlan_rule){.vid = 4095, .rule = {.session_id = 1}};
	CHECK(mr_tap__set_rules(t, r, 1) == -EINVAL, "VID 4095");
	r[0].vid = 5, r[1] = r[0];
	CHECK(mr_tap__set_rules(t, r, 2) == -EINVAL, "VID 5 twice");
	r[1].vid = 6, r[1].flags = 0x2; /* 0x1 is MR_TAP_RULE_WHEN_LISTENED */
	CHECK(mr_tap__set_rules(t, r, 2) == -EINVAL, "flags");
	for (uint32_t i = 0; i < 66; i++)
		r[i] = (struct mr_tap_vlan_rule){.vid = i + 1, .rule = {.session_id = 1000 + i, .rate = 1}};
	CHECK(mr_tap__set_rules(t, r, 65) == -EINVAL, "65 VID rules");
	r[64] = (struct mr_tap_vlan_rule){.vid = 0, .rule = {.session_id = 7, .rate = 1}};
	CHECK(mr_tap__set_rules(t, r, 65) == 0, "64 VID rules and a default");
	CHECK(mr_tap__set_rules(t, r, 66) == -EINVAL, "66 rules");
	CHECK(mr_tap__set_rules(NULL, r, 1) == -EINVAL && mr_tap__set_rules(t, NULL, 1) == -EINVAL, "NULLs");
	static struct tframe fr[70];
	const void *data[70];
	uint32_t len[70];
	for (uint32_t i = 0; i < 70; i++) { /* VIDs 1..70: 64 with a rule, 6 to the default */
		make(&fr[i], i, 0x8100, (uint16_t)(i + 1), 0, 0);
		data[i] = fr[i].b, len[i] = fr[i].len;
	}
	mr_tap__offer(t, data, len, 70, 1, 0);
	struct mr_tap_rule_counters rc[80];
	int nr = mr_tap__rule_counters(t, rc, 80), ok = 0;
	for (int i = 0; i < nr; i++)
		ok += rc[i].vid ? rc[i].session_id == 1000 + rc[i].vid - 1 && rc[i].seen == 1
				: rc[i].session_id == 7 && rc[i].seen == 6;
	CHECK(nr == 65 && ok == 65, "%d rules, %d right", nr, ok);
	CHECK(mr_tap__rule_counters(t, rc, 3) == 65, "a short buffer still gives the count");
	mr_tap__destroy(t);
}

/* tables swapped from another thread while the packet thread offers: every record's
 * session is that of a rule for the frame's VID in some table set; copies accounted for;
 * counters readable at any time (TSan) */
static struct mr_tap *st;
static _Atomic int stop;

static void *swapper(void *arg)
{
	struct mr_tap_rule_counters rc[70];
	for (uint32_t g = 0; g < 2000; g++) {
		/* parent session 1 or none; VID 100 -> 100 + g%3; VID 200 only some of the time */
		struct mr_tap_vlan_rule r[3] = {
			{.vid = 100, .rule = {.session_id = 100 + g % 3, .rate = 1 + g % 4}},
			{.vid = 0, .rule = {.session_id = g % 2, .rate = 1}},
			{.vid = 200, .rule = {.session_id = 200, .rate = 2}},
		};
		mr_tap__set_rules(st, r, g % 5 == 0 ? 3 : 2);
		int n = mr_tap__rule_counters(st, rc, 70);
		for (int i = 0; i < n && i < 70; i++)
			if (rc[i].sampled > rc[i].seen || rc[i].pushed + rc[i].dropped_ring_full > rc[i].sampled)
				atomic_store(&stop, 2); /* read torn: fail below */
	}
	if (atomic_load(&stop) == 0)
		atomic_store(&stop, 1);
	return NULL;
}

static void test_stress(unsigned bursts)
{
	char err[256];
	CHECK(mr_tap__create(&st, NULL, 1 << 20, "stress", err, sizeof(err)) == 0, "%s", err);
	struct mr_cons c = attach(st);
	static struct tframe fr[40];
	const void *data[40];
	uint32_t len[40];
	for (uint32_t i = 0; i < 40; i++) {
		make_mix(&fr[i], i);
		data[i] = fr[i].b, len[i] = fr[i].len;
	}
	pthread_t th;
	pthread_create(&th, NULL, swapper, NULL);
	uint64_t records = 0;
	for (unsigned b = 0; b < bursts || !atomic_load(&stop); b++) {
		mr_tap__offer(st, data, len, 40, 1, b);
		struct mr_frame m[64];
		uint64_t corrupt = 0;
		unsigned k;
		while ((k = mr_cons__peek(&c, m, 64, &corrupt)) > 0) {
			for (unsigned j = 0; j < k; j++) {
				uint32_t sid = m[j].session_id, tpid = (uint32_t)m[j].data[12] << 8 | m[j].data[13];
				uint32_t vid = tpid == 0x8100 || tpid == 0x88a8 ? ((m[j].data[14] & 0xf) << 8 | m[j].data[15]) : 0;
				CHECK((vid == 100 && sid >= 100 && sid < 103) || (vid == 200 && (sid == 200 || sid == 1)) ||
				      ((vid == 0 || vid == 300) && sid == 1),
				      "record: VID %u went to session %u", vid, sid);
				records++;
			}
			mr_cons__release(&c);
		}
		CHECK(corrupt == 0, "corrupt");
	}
	pthread_join(th, NULL);
	CHECK(atomic_load(&stop) == 1, "a rule's counters read torn");
	mr_tap__offer_burst(st, NULL, 0, 1, 0); /* take up the last table */
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
		test_dispatch();
		test_filter_no_fallback();
		test_bounds();
	}
	test_stress(bursts);
	return check_exit();
}
