/* SPDX-License-Identifier: MIT */
/*
 * C tests of the registration helper (native/src/client.c), built by
 * tests/unit/test_client_native.py with -fsanitize=address,undefined.
 *
 *   test_client decode              the reply decoder on hand-made, truncated, mutated and
 *                                   hostile bodies (no daemon)
 *   test_client daemon SOCK INGRESS N
 *                                   against a real daemon: the rule for INGRESS, a memfd tap
 *                                   registered with it, N distinct frames offered under that
 *                                   rule; prints the rule and the tap's counters for the
 *                                   caller to compare with the daemon's status
 *
 * The decoder's functions are static: this file includes client.c to reach them.
 */
#include "../src/client.c"

#include <inttypes.h>

#include "check.h"
#define CHECK(cond, ...) CHECK_THEN(return, cond, __VA_ARGS__)

/* ---------------------------------------------------------- a test-side writer */

struct w {
	uint8_t b[8192];
	size_t n;
};
static void w_raw(struct w *w, const void *p, size_t n) { memcpy(w->b + w->n, p, n), w->n += n; }
static void w_u8(struct w *w, uint8_t v) { w->b[w->n++] = v; }
static void w_be(struct w *w, uint64_t v, unsigned n)
{
	for (unsigned k = n; k--;)
		w_u8(w, (uint8_t)(v >> (8 * k)));
}
static void w_str(struct w *w, const char *s)
{
	size_t n = strlen(s);
	if (n < 32)
		w_u8(w, (uint8_t)(0xa0 | n));
	else
		w_u8(w, 0xd9), w_u8(w, (uint8_t)n);
	w_raw(w, s, n);
}
static void w_uint(struct w *w, uint64_t v) /* the widest form, to exercise it */
{
	if (v < 128)
		w_u8(w, (uint8_t)v);
	else if (v <= UINT32_MAX)
		w_u8(w, 0xce), w_be(w, v, 4);
	else
		w_u8(w, 0xcf), w_be(w, v, 8);
}

/* A config reply as the daemon sends it (docs/control-protocol.md, 5.2), with the fields
 * in an order where "sessions" comes last and a float, a bin and a nil to be skipped. */
static void config_reply(struct w *w)
{
	w->n = 0;
	w_u8(w, 0x82);
	w_str(w, "config");
	w_u8(w, 0x87);
	w_str(w, "instance"), w_str(w, "6bca1a878b6517f9");
	w_str(w, "generation"), w_uint(w, 3);
	w_str(w, "runtime_dir"), w_str(w, "/run/mirrord");
	w_str(w, "uptime_s"), w_u8(w, 0xcb), w_be(w, 0x4023000000000000ull, 8);
	w_str(w, "blob"), w_u8(w, 0xc4), w_u8(w, 3), w_raw(w, "\0\1\2", 3);
	w_str(w, "interfaces"), w_u8(w, 0x82), w_str(w, "eth1"), w_uint(w, 1875396068),
		w_str(w, "eth3"), w_uint(w, 1893377944);
	w_str(w, "sessions"), w_u8(w, 0x92);
	w_u8(w, 0x87), w_str(w, "name"), w_str(w, "span-uplink"), w_str(w, "id"), w_uint(w, 1875396068),
		w_str(w, "input"), w_u8(w, 0x92), w_str(w, "eth1"), w_str(w, "eth2"),
		w_str(w, "rate"), w_uint(w, 1), w_str(w, "run_length"), w_uint(w, 0),
		w_str(w, "max_packet_length"), w_uint(w, 0), w_str(w, "note"), w_u8(w, 0xc0);
	w_u8(w, 0x86), w_str(w, "name"), w_str(w, "ids"), w_str(w, "id"), w_uint(w, 1893377944),
		w_str(w, "input"), w_u8(w, 0x91), w_str(w, "eth3"),
		w_str(w, "rate"), w_uint(w, 100), w_str(w, "run_length"), w_uint(w, 4),
		w_str(w, "max_packet_length"), w_u8(w, 0xcd), w_be(w, 128, 2);
	w_str(w, "ok"), w_u8(w, 0xc3);
}

static int parse(const uint8_t *b, size_t n, const char *ingress, struct mr_tap_rule *r,
		 uint64_t *gen, char *inst, size_t instlen, char *err, size_t errlen)
{
	struct mp top = { .base = b, .p = b, .end = b + n, .err = err, .errlen = errlen }, m;
	err[0] = 0;
	int rc = reply_top(&top, "config", &m);
	return rc ? rc : parse_config(&m, ingress, r, gen, inst, instlen);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
	uint64_t x = rng_state;
	x ^= x << 13, x ^= x >> 7, x ^= x << 17;
	return rng_state = x;
}

static void test_decode_good(void)
{
	struct w w;
	struct mr_tap_rule r;
	uint64_t gen = 0;
	char inst[32], err[256];

	config_reply(&w);
	int rc = parse(w.b, w.n, "eth3", &r, &gen, inst, sizeof(inst), err, sizeof(err));
	CHECK(rc == 0, "rc %d: %s", rc, err);
	CHECK(r.session_id == 1893377944u && r.rate == 100 && r.run_length == 4 && r.max_len == 128,
	      "eth3: id %u rate %u run %u max %u", r.session_id, r.rate, r.run_length, r.max_len);
	CHECK(gen == 3 && !strcmp(inst, "6bca1a878b6517f9"), "gen %" PRIu64 " instance %s", gen, inst);
	rc = parse(w.b, w.n, "eth2", &r, &gen, NULL, 0, err, sizeof(err));
	CHECK(rc == 0 && r.session_id == 1875396068u && r.rate == 1, "eth2: rc %d id %u", rc, r.session_id);
	rc = parse(w.b, w.n, "eth9", &r, &gen, NULL, 0, err, sizeof(err));
	CHECK(rc == 0 && r.session_id == 0 && r.rate == 0, "eth9: rc %d id %u", rc, r.session_id);
	rc = parse(w.b, w.n, "eth3", &r, &gen, inst, 8, err, sizeof(err));
	CHECK(rc == -ENOSPC && strstr(err, "instance"), "small instance buffer: rc %d %s", rc, err);
}

/* Every strict prefix of a good reply is refused with -EPROTO and a message. */
static void test_decode_truncated(void)
{
	struct w w;
	struct mr_tap_rule r;
	uint64_t gen;
	char err[256];

	config_reply(&w);
	for (size_t n = 0; n < w.n; n++) {
		uint8_t *copy = malloc(n ? n : 1); /* exact size: ASan sees any read past it */
		memcpy(copy, w.b, n);
		int rc = parse(copy, n, "eth1", &r, &gen, NULL, 0, err, sizeof(err));
		free(copy);
		CHECK(rc == -EPROTO && err[0], "prefix of %zu/%zu bytes: rc %d err '%s'", n, w.n, rc, err);
	}
}

/* Random byte flips and splices: never a crash or a read out of bounds (ASan), and only
 * the documented outcomes. */
static void test_decode_mutated(void)
{
	struct w w;
	struct mr_tap_rule r;
	uint64_t gen;
	char inst[64], err[256];
	unsigned ok = 0, refused = 0;

	config_reply(&w);
	for (int it = 0; it < 200000; it++) {
		size_t n = w.n;
		uint8_t *copy = malloc(n);
		memcpy(copy, w.b, n);
		for (int k = 1 + (int)(rnd() % 4); k--;) {
			size_t at = rnd() % n;
			switch (rnd() % 3) {
			case 0: copy[at] = (uint8_t)rnd(); break;
			case 1: copy[at] ^= (uint8_t)(1u << (rnd() % 8)); break;
			default: copy[at] = (uint8_t[]){ 0xc1, 0xd4, 0xdc, 0xdd, 0xdf, 0xdb, 0xc6, 0xff }[rnd() % 8];
			}
		}
		size_t len = rnd() % 8 ? n : rnd() % n;
		int rc = parse(copy, len, "eth3", &r, &gen, inst, sizeof(inst), err, sizeof(err));
		free(copy);
		CHECK(rc == 0 || rc == -EPROTO || rc == -ENOSPC || rc == -EREMOTEIO,
		      "iteration %d: rc %d", it, rc);
		CHECK(rc == 0 || err[0], "iteration %d: rc %d without a message", it, rc);
		CHECK(strlen(err) < sizeof(err), "unterminated message");
		if (rc == 0)
			ok++;
		else
			refused++;
	}
	printf("mutated: %u decoded, %u refused\n", ok, refused);
	CHECK(ok > 0 && refused > 0, "a fuzz run that only ever took one branch");
}

static void test_decode_hostile(void)
{
	struct w w;
	struct mr_tap_rule r;
	uint64_t gen;
	char err[256];
	int rc;

	/* nested arrays deeper than the bound: refused, no recursion past it */
	w.n = 0;
	w_u8(&w, 0x82), w_str(&w, "ok"), w_u8(&w, 0xc3), w_str(&w, "x");
	for (int k = 0; k < 1000; k++)
		w_u8(&w, 0x91);
	w_u8(&w, 0xc0);
	rc = parse(w.b, w.n, "eth1", &r, &gen, NULL, 0, err, sizeof(err));
	CHECK(rc == -EPROTO && strstr(err, "nested deeper"), "deep: rc %d %s", rc, err);

	/* a map claiming 2^32-1 entries in a 20-byte body */
	w.n = 0;
	w_u8(&w, 0xdf), w_be(&w, 0xffffffffu, 4), w_str(&w, "ok"), w_u8(&w, 0xc3);
	rc = parse(w.b, w.n, "eth1", &r, &gen, NULL, 0, err, sizeof(err));
	CHECK(rc == -EPROTO && strstr(err, "entries"), "huge map: rc %d %s", rc, err);

	/* a str claiming 4 GiB */
	w.n = 0;
	w_u8(&w, 0x81), w_u8(&w, 0xdb), w_be(&w, 0xfffffff0u, 4), w_raw(&w, "ok", 2);
	rc = parse(w.b, w.n, "eth1", &r, &gen, NULL, 0, err, sizeof(err));
	CHECK(rc == -EPROTO && strstr(err, "a str"), "huge str: rc %d %s", rc, err);

	/* ext types are not part of the protocol */
	w.n = 0;
	w_u8(&w, 0x82), w_str(&w, "ok"), w_u8(&w, 0xc3), w_str(&w, "config"), w_u8(&w, 0xd4),
		w_u8(&w, 1), w_u8(&w, 2);
	rc = parse(w.b, w.n, "eth1", &r, &gen, NULL, 0, err, sizeof(err));
	CHECK(rc == -EPROTO && strstr(err, "0xd4") && strstr(err, "not used"), "ext: rc %d %s", rc, err);

	/* a non-string key */
	w.n = 0;
	w_u8(&w, 0x81), w_u8(&w, 0x01), w_u8(&w, 0xc3);
	rc = parse(w.b, w.n, "eth1", &r, &gen, NULL, 0, err, sizeof(err));
	CHECK(rc == -EPROTO && strstr(err, "not a str"), "int key: rc %d %s", rc, err);

	/* ok false: the daemon's error, control bytes made visible */
	w.n = 0;
	w_u8(&w, 0x82), w_str(&w, "ok"), w_u8(&w, 0xc2), w_str(&w, "error"), w_str(&w, "nope\nnope");
	rc = parse(w.b, w.n, "eth1", &r, &gen, NULL, 0, err, sizeof(err));
	CHECK(rc == -EREMOTEIO && !strcmp(err, "nope?nope"), "refused: rc %d '%s'", rc, err);

	/* a session id above 32 bits, and an ingress claimed by two sessions */
	w.n = 0;
	w_u8(&w, 0x82), w_str(&w, "ok"), w_u8(&w, 0xc3), w_str(&w, "config"), w_u8(&w, 0x82),
		w_str(&w, "generation"), w_uint(&w, 1), w_str(&w, "sessions"), w_u8(&w, 0x91), w_u8(&w, 0x82),
		w_str(&w, "id"), w_uint(&w, 1ull << 33), w_str(&w, "input"), w_u8(&w, 0x91), w_str(&w, "eth1");
	rc = parse(w.b, w.n, "eth1", &r, &gen, NULL, 0, err, sizeof(err));
	CHECK(rc == -EPROTO && strstr(err, "\"id\"") && strstr(err, "above"), "big id: rc %d %s", rc, err);
	w.n = 0;
	w_u8(&w, 0x82), w_str(&w, "ok"), w_u8(&w, 0xc3), w_str(&w, "config"), w_u8(&w, 0x82),
		w_str(&w, "generation"), w_uint(&w, 1), w_str(&w, "sessions"), w_u8(&w, 0x92);
	for (int s = 1; s <= 2; s++)
		w_u8(&w, 0x82), w_str(&w, "id"), w_uint(&w, (uint64_t)s), w_str(&w, "input"), w_u8(&w, 0x91),
			w_str(&w, "eth1");
	rc = parse(w.b, w.n, "eth1", &r, &gen, NULL, 0, err, sizeof(err));
	CHECK(rc == -EPROTO && strstr(err, "two sessions"), "twice: rc %d %s", rc, err);

	/* bytes after the map */
	config_reply(&w);
	w_u8(&w, 0xc0);
	rc = parse(w.b, w.n, "eth1", &r, &gen, NULL, 0, err, sizeof(err));
	CHECK(rc == -EPROTO && strstr(err, "after the map"), "trailing: rc %d %s", rc, err);
}

/* The whole transport: a reply frame written by a peer on a socketpair, hostile lengths
 * included, and the encoder's request bytes as the daemon would read them. */
static void test_transport(void)
{
	int sv[2];
	struct mr_client c;
	struct mr_tap_rule r;
	uint64_t gen;
	char err[256];
	uint8_t req[64];
	struct w w;

	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
	c.fd = sv[0];
	config_reply(&w);
	uint8_t head[4] = { (uint8_t)(w.n >> 24), (uint8_t)(w.n >> 16), (uint8_t)(w.n >> 8), (uint8_t)w.n };
	CHECK(write(sv[1], head, 4) == 4 && write(sv[1], w.b, w.n) == (ssize_t)w.n, "write");
	int rc = mr_client__rule(&c, "eth3", &r, &gen, NULL, 0, err, sizeof(err));
	CHECK(rc == 0 && r.rate == 100 && gen == 3, "socketpair rule: rc %d %s", rc, err);
	/* the request as sent: 00 00 00 0b, {"op": "config"} */
	static const uint8_t want[] = { 0, 0, 0, 11, 0x81, 0xa2, 'o', 'p', 0xa6, 'c', 'o', 'n', 'f', 'i', 'g' };
	CHECK(read(sv[1], req, sizeof(req)) == (ssize_t)sizeof(want) && !memcmp(req, want, sizeof(want)),
	      "request bytes");

	/* a length above the limit: refused before anything is allocated or read */
	CHECK(write(sv[1], "\x00\x10\x00\x01", 4) == 4, "write");
	rc = mr_client__rule(&c, "eth3", &r, &gen, NULL, 0, err, sizeof(err));
	CHECK(rc == -EPROTO && strstr(err, "1048577"), "big length: rc %d %s", rc, err);
	(void)!read(sv[1], req, sizeof(req));

	/* the peer closes in the middle of a reply */
	CHECK(write(sv[1], "\x00\x00\x00\x10\x81", 5) == 5, "write");
	shutdown(sv[1], SHUT_WR);
	rc = mr_client__rule(&c, "eth3", &r, &gen, NULL, 0, err, sizeof(err));
	close(sv[1]);
	CHECK(rc == -ECONNRESET && strstr(err, "closed"), "closed: rc %d %s", rc, err);
	close(sv[0]);
}

/* A config reply with what mr_client__rules reads: a filtered session on eth1 (its
 * "inputs" resolved), a VLAN input session eth1.100 with a filter of its own, floats and
 * unknown nested maps to skip. */
static void rules_reply(struct w *w)
{
	/* ldh [12]; jeq #0x800 jt 0 jf 1; ret #262144; ret #0 */
	static const struct mr_tap_insn prog[] = { { 0x28, 0, 0, 12 }, { 0x15, 0, 1, 0x800 },
						   { 0x06, 0, 0, 262144 }, { 0x06, 0, 0, 0 } };
	w->n = 0;
	w_u8(w, 0x82);
	w_str(w, "ok"), w_u8(w, 0xc3);
	w_str(w, "config");
	w_u8(w, 0x84);
	w_str(w, "instance"), w_str(w, "6bca1a878b6517f9");
	w_str(w, "generation"), w_uint(w, 9);
	w_str(w, "extra"), w_u8(w, 0x81), w_str(w, "a"), w_u8(w, 0x92), w_u8(w, 0xcb), w_be(w, 0, 8), w_u8(w, 0xc0);
	w_str(w, "sessions"), w_u8(w, 0x92);
	for (int s = 0; s < 2; s++) {
		w_u8(w, 0x89);
		w_str(w, "name"), w_str(w, s ? "v100" : "parent");
		w_str(w, "id"), w_uint(w, 100 + (uint64_t)s);
		w_str(w, "rate"), w_uint(w, 3);
		w_str(w, "run_length"), w_uint(w, 1);
		w_str(w, "max_packet_length"), w_u8(w, 0xcd), w_be(w, 9216, 2);
		w_str(w, "filter"), w_str(w, "ip");
		w_str(w, "filter_program"), w_u8(w, 0xc5), w_be(w, sizeof(prog) - 8 * (unsigned)s, 2),
			w_raw(w, prog + s, sizeof(prog) - 8 * (size_t)s);
		w_str(w, "input"), w_u8(w, 0x91), w_str(w, s ? "eth1.100" : "eth1");
		w_str(w, "inputs"), w_u8(w, 0x91), w_u8(w, 0x84), w_str(w, "interface"), w_str(w, "eth1"),
			w_str(w, "vlan"), w_uint(w, s ? 100 : 0), w_str(w, "name"), w_str(w, s ? "eth1.100" : "eth1"),
			w_str(w, "protocol"), w_str(w, "802.1Q");
	}
}

static int parse_t(const uint8_t *b, size_t n, const char *ingress, struct mr_client_rules *out, char *err,
		   size_t errlen)
{
	struct mp top = { .base = b, .p = b, .end = b + n, .err = err, .errlen = errlen }, m;
	static struct bpf_insn scratch[MR_TAP_MAX_INSNS];
	struct t_state t = { .ingress = ingress, .ingress_len = strlen(ingress), .scratch = scratch };
	err[0] = 0;
	int rc = reply_top(&top, "config", &m);
	return rc ? rc : parse_rules(&m, &t, out);
}

/* mr_client__rules's parser: the good reply, every prefix, and random mutations; never a
 * crash or a read out of bounds (ASan), a table that always fits the tap. */
static void test_rules_decode(void)
{
	struct w w;
	static struct mr_client_rules out;
	char err[256];
	unsigned ok = 0, refused = 0;

	rules_reply(&w);
	int rc = parse_t(w.b, w.n, "eth1", &out, err, sizeof(err));
	CHECK(rc == 0 && out.n == 2 && out.ninsns == 7 && out.generation == 9, "rc %d n %u: %s", rc, out.n, err);
	CHECK(out.rules[0].vid == 0 && out.rules[0].rule.session_id == 100 && out.rules[0].filter_len == 4 &&
	      out.rules[1].vid == 100 && out.rules[1].rule.session_id == 101 && out.rules[1].filter_len == 3 &&
	      out.rules[0].rule.max_len == 9216 && out.rules[1].filter == out.insns + 4 &&
	      out.rules[1].filter[0].code == 0x15, "the table for eth1");
	rc = parse_t(w.b, w.n, "eth1.100", &out, err, sizeof(err));
	CHECK(rc == 0 && out.n == 1 && out.rules[0].vid == 0 && out.rules[0].rule.session_id == 101,
	      "eth1.100: rc %d n %u", rc, out.n);
	for (size_t n = 0; n < w.n; n++) {
		uint8_t *copy = malloc(n ? n : 1);
		memcpy(copy, w.b, n);
		rc = parse_t(copy, n, "eth1", &out, err, sizeof(err));
		free(copy);
		CHECK(rc == -EPROTO && err[0], "prefix of %zu/%zu bytes: rc %d err '%s'", n, w.n, rc, err);
	}
	for (int it = 0; it < 100000; it++) {
		size_t n = w.n;
		uint8_t *copy = malloc(n);
		memcpy(copy, w.b, n);
		for (int k = 1 + (int)(rnd() % 4); k--;) {
			size_t at = rnd() % n;
			switch (rnd() % 3) {
			case 0: copy[at] = (uint8_t)rnd(); break;
			case 1: copy[at] ^= (uint8_t)(1u << (rnd() % 8)); break;
			default: copy[at] = (uint8_t[]){ 0xc1, 0xc4, 0xc5, 0xdc, 0xde, 0xdf, 0x8f, 0xff }[rnd() % 8];
			}
		}
		size_t len = rnd() % 8 ? n : rnd() % n;
		rc = parse_t(copy, len, rnd() % 2 ? "eth1" : "eth1.100", &out, err, sizeof(err));
		free(copy);
		CHECK(rc == 0 || rc == -EPROTO || rc == -EREMOTEIO, "iteration %d: rc %d", it, rc);
		CHECK(rc == 0 || (err[0] && !strchr(err, '\n')), "iteration %d: rc %d, message '%s'", it, rc, err);
		if (rc) {
			refused++;
			continue;
		}
		ok++;
		uint32_t sum = 0;
		CHECK(out.n <= MR_TAP_MAX_VLAN_RULES + 1 && out.ninsns <= MR_TAP_MAX_TABLE_INSNS, "bounds");
		for (uint32_t i = 0; i < out.n; i++) {
			CHECK(out.rules[i].vid <= 4094 && !out.rules[i].flags, "rule %u", i);
			CHECK(!out.rules[i].filter_len || (out.rules[i].filter == out.insns + sum &&
			      bpf_validate((const struct bpf_insn *)out.rules[i].filter, (int)out.rules[i].filter_len)),
			      "iteration %d: rule %u's filter", it, i);
			sum += out.rules[i].filter_len;
		}
		CHECK(sum == out.ninsns, "ninsns");
	}
	printf("rules mutated: %u decoded, %u refused\n", ok, refused);
	CHECK(ok > 0 && refused > 0, "a fuzz run that only ever took one branch");
}

/* ---------------------------------------------------------- against a daemon */

static int run_daemon(const char *sock, const char *ingress, unsigned n)
{
	struct mr_client *c;
	struct mr_tap *t;
	struct mr_tap_rule r;
	struct mr_tap_counters k;
	uint64_t gen;
	char inst[64], err[256];
	int rc;

	if ((rc = mr_client__connect(&c, sock, err, sizeof(err)))) {
		fprintf(stderr, "connect: %d %s\n", rc, err);
		return 1;
	}
	if ((rc = mr_client__rule(c, ingress, &r, &gen, inst, sizeof(inst), err, sizeof(err)))) {
		fprintf(stderr, "rule: %d %s\n", rc, err);
		return 1;
	}
	printf("rule session_id=%u rate=%u run_length=%u max_len=%u generation=%" PRIu64 " instance=%s\n",
	       r.session_id, r.rate, r.run_length, r.max_len, gen, inst);
	if ((rc = mr_tap__create(&t, NULL, 0, "ctest", err, sizeof(err)))) {
		fprintf(stderr, "tap: %d %s\n", rc, err);
		return 1;
	}
	/* a refused registration names the daemon's reason */
	rc = mr_client__register(c, t, "bad/name", err, sizeof(err));
	printf("bad name: rc=%d err=%s\n", rc, err);
	if ((rc = mr_client__register(c, t, "ctest", err, sizeof(err)))) {
		fprintf(stderr, "register: %d %s\n", rc, err);
		return 1;
	}
	mr_tap__set_rule(t, &r);
	static uint8_t frames[64][128];
	const void *data[64];
	uint32_t len[64];
	for (unsigned done = 0; done < n;) {
		unsigned b = n - done < 64 ? n - done : 64;
		for (unsigned i = 0; i < b; i++) {
			uint32_t seq = done + i;
			memset(frames[i], 0xff, 6);                 /* broadcast */
			memcpy(frames[i] + 6, "\x02\0\0\0\0\x01", 6);
			frames[i][12] = 0x88, frames[i][13] = 0xb5; /* local experimental ethertype */
			for (unsigned j = 14; j < sizeof(frames[i]); j++)
				frames[i][j] = (uint8_t)(seq * 31 + j);
			memcpy(frames[i] + 14, &seq, 4);
			data[i] = frames[i], len[i] = 60 + seq % 68;
		}
		mr_tap__offer(t, data, len, b, 1, 0);
		done += b;
	}
	mr_tap__counters(t, &k);
	printf("counters seen=%" PRIu64 " sampled=%" PRIu64 " pushed=%" PRIu64 " dropped_ring_full=%" PRIu64 "\n",
	       k.seen, k.sampled, k.pushed, k.dropped_ring_full);
	fflush(stdout);
	/* stay until the caller saw the daemon drain the ring: it goes with this process */
	char line[8];
	(void)!fgets(line, sizeof(line), stdin);
	mr_tap__destroy(t);
	mr_client__close(c);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "decode")) {
		test_decode_good();
		test_decode_truncated();
		test_decode_hostile();
		test_transport();
		test_decode_mutated();
		test_rules_decode();
		if (failures)
			return 1;
		printf("ok\n");
		return 0;
	}
	if (argc == 5 && !strcmp(argv[1], "daemon"))
		return run_daemon(argv[2], argv[3], (unsigned)strtoul(argv[4], NULL, 0));
	fprintf(stderr, "usage: test_client decode | daemon SOCK INGRESS N\n");
	return 2;
}
