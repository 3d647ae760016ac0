/* SPDX-License-Identifier: MIT */
/*
 * mr_client__rules as an embedder calls it: public headers only (<mirrord/client.h>,
 * <mirrord/tap.h>), linked against libmirrord (tests/unit/test_client_rules.py builds it
 * once against build/lib's libmirrord.so.0, once from the sources under ASan/UBSan).
 *
 *   test_client_rules SOCK INGRESS [RING FRAMES]
 *
 * Connects to SOCK and asks for INGRESS's table, then prints one line
 *
 *   result rc=RC untouched=0|1 err=...          (untouched: out kept its sentinel on error)
 *
 * and on success the table (`table generation=.. instance=.. n=.. ninsns=..`, then per
 * rule `rule vid=.. flags=.. session_id=.. rate=.. run_length=.. max_len=.. filter=HEX`).
 * With RING and FRAMES: a tap on a new ring file RING, the table set with
 * mr_tap__set_rules, then the frames of FRAMES (each a 4-byte little-endian length and the
 * bytes) offered in bursts of 16; prints the tap's counters and each rule's, flushes, and
 * keeps the ring (the tap removes its file when destroyed) until stdin closes.
 */
#include <mirrord/client.h>
#include <mirrord/tap.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FRAMES 1024

static int run_tap(const struct mr_client_rules *r, const char *ring, const char *frames_path)
{
	char err[256];
	struct mr_tap *t;
	int rc = mr_tap__create(&t, ring, 1 << 20, "ctest-rules", err, sizeof(err));
	if (rc) {
		fprintf(stderr, "tap: %d %s\n", rc, err);
		return 1;
	}
	/* what docs/embedding.md says: straight from the helper to the tap */
	if ((rc = mr_tap__set_rules(t, r->rules, r->n))) {
		fprintf(stderr, "set_rules: %d\n", rc);
		return 1;
	}
	FILE *f = fopen(frames_path, "rb");
	if (!f) {
		perror(frames_path);
		return 1;
	}
	static uint8_t *buf[MAX_FRAMES];
	static const void *data[MAX_FRAMES];
	static uint32_t len[MAX_FRAMES];
	unsigned n = 0;
	uint8_t head[4];
	while (n < MAX_FRAMES && fread(head, 1, 4, f) == 4) {
		uint32_t l = head[0] | head[1] << 8 | head[2] << 16 | (uint32_t)head[3] << 24;
		if (l > 9216 || !(buf[n] = malloc(l ? l : 1)) || fread(buf[n], 1, l, f) != l) {
			fprintf(stderr, "%s: a bad frame record\n", frames_path);
			return 1;
		}
		data[n] = buf[n], len[n] = l, n++;
	}
	fclose(f);
	unsigned pushed = 0;
	for (unsigned off = 0; off < n; off += 16)
		pushed += mr_tap__offer(t, data + off, len + off, n - off < 16 ? n - off : 16, 7, 1000 + off);
	struct mr_tap_counters c;
	mr_tap__counters(t, &c);
	printf("counters seen=%" PRIu64 " sampled=%" PRIu64 " pushed=%" PRIu64 " dropped_ring_full=%" PRIu64
	       " filtered=%" PRIu64 " returned=%u\n",
	       c.seen, c.sampled, c.pushed, c.dropped_ring_full, mr_tap__filtered(t), pushed);
	struct mr_tap_rule_counters rc_[MR_TAP_MAX_VLAN_RULES + 1];
	int k = mr_tap__rule_counters(t, rc_, MR_TAP_MAX_VLAN_RULES + 1);
	for (int i = 0; i < k && i <= MR_TAP_MAX_VLAN_RULES; i++)
		printf("rule_counters vid=%u session_id=%u seen=%" PRIu64 " filtered=%" PRIu64 " sampled=%" PRIu64
		       " pushed=%" PRIu64 "\n",
		       rc_[i].vid, rc_[i].session_id, rc_[i].seen, rc_[i].filtered, rc_[i].sampled, rc_[i].pushed);
	printf("done\n");
	fflush(stdout);
	char line[8];
	(void)!fgets(line, sizeof(line), stdin);
	mr_tap__destroy(t);
	for (unsigned i = 0; i < n; i++)
		free(buf[i]);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 3 && argc != 5) {
		fprintf(stderr, "usage: test_client_rules SOCK INGRESS [RING FRAMES]\n");
		return 2;
	}
	char err[256] = "";
	struct mr_client *c;
	int rc = mr_client__connect(&c, argv[1], err, sizeof(err));
	if (rc) {
		printf("result rc=%d untouched=1 err=%s\n", rc, err);
		return 1;
	}
	/* the struct is ~130 KiB: on the heap, as client.h advises; a sentinel shows whether a
	 * refused reply left it alone */
	struct mr_client_rules *r = malloc(sizeof(*r));
	if (!r)
		return 1;
	memset(r, 0xa5, sizeof(*r));
	rc = mr_client__rules(c, argv[2], r, err, sizeof(err));
	const uint8_t *b = (const uint8_t *)r;
	int untouched = 1;
	for (size_t i = 0; i < sizeof(*r); i++)
		untouched &= b[i] == 0xa5;
	printf("result rc=%d untouched=%d err=%s\n", rc, untouched, rc ? err : "");
	if (rc) {
		mr_client__close(c);
		free(r);
		return 0;
	}
	printf("table generation=%" PRIu64 " instance=%s n=%u ninsns=%u\n", r->generation, r->instance, r->n,
	       r->ninsns);
	for (uint32_t i = 0; i < r->n; i++) {
		const struct mr_tap_vlan_rule *v = &r->rules[i];
		printf("rule vid=%u flags=%u session_id=%u rate=%u run_length=%u max_len=%u filter=", v->vid,
		       v->flags, v->rule.session_id, v->rule.rate, v->rule.run_length, v->rule.max_len);
		const uint8_t *p = (const uint8_t *)v->filter;
		for (size_t k = 0; k < (size_t)v->filter_len * sizeof(struct mr_tap_insn); k++)
			printf("%02x", p[k]);
		/* the program lies inside the struct's own insns */
		if (v->filter_len && (v->filter < r->insns || v->filter + v->filter_len > r->insns + r->ninsns))
			printf(" OUTSIDE");
		printf("\n");
	}
	fflush(stdout);
	int ret = argc == 5 ? run_tap(r, argv[3], argv[4]) : 0;
	mr_client__close(c);
	free(r);
	return ret;
}
