/* SPDX-License-Identifier: MIT */
/*
 * The registration helper (mirrord/client.h): the control socket's framing (a 4-byte
 * big-endian length, then one msgpack map: docs/control-protocol.md, section 3) and a
 * msgpack encoder/decoder of our own for exactly what the protocol carries.
 *
 * Why not a msgpack library: the requests are three fixed shapes and the replies are read
 * once per configuration poll; a dependency in every forwarder that embeds the tap would
 * cost more than the 300 lines below.  The decoder is bounded: a reply body is at most
 * MR_CLIENT_MAX_MESSAGE bytes, nesting at most MR_CLIENT_MAX_DEPTH, every length is checked
 * against the bytes left before it is used, and any type the protocol does not use (ext,
 * the reserved 0xc1) is refused with -EPROTO naming the byte and its offset.  Floats are
 * skipped, never interpreted: `status` carries one (uptime_s) and a reply may grow fields.
 */
#define _GNU_SOURCE
#include "mirrord/client.h"
#include "mirrord/tap.h"
#include "util.h" /* MR_EXPORT: what libmirrord exports (native/libmirrord.map) */

#include <sys/types.h> /* u_int and u_char, which pcap/bpf.h uses */
#include <pcap/bpf.h>   /* bpf_validate: what the tap will check again */

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

struct mr_client {
	int fd;
};

/* ------------------------------------------------------------------ decoder */

enum mp_kind { MP_NIL, MP_BOOL, MP_UINT, MP_NINT, MP_FLOAT, MP_STR, MP_BIN, MP_ARRAY, MP_MAP };

static const char *const mp_names[] = { "nil", "bool", "int", "int", "float", "str", "bin",
					"array", "map" };

struct mp_obj {
	enum mp_kind kind;
	uint64_t u;          /* bool, uint; the count of an array or map */
	int64_t i;           /* negative int */
	const uint8_t *data; /* str, bin */
	uint32_t len;
};

struct mp {
	const uint8_t *base, *p, *end;
	char *err;
	size_t errlen;
};

static int mp_short(struct mp *m, const char *what, uint64_t need)
{
	return fail(m->err, m->errlen, -EPROTO,
		    "malformed reply: %s at offset %td needs %llu bytes, %td left", what,
		    m->p - m->base, (unsigned long long)need, m->end - m->p);
}

static uint64_t be(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;
	for (unsigned k = 0; k < n; k++)
		v = v << 8 | p[k];
	return v;
}

/* The next object's header (a str's or bin's bytes too); an array's or map's elements
 * follow it.  A count is checked against the bytes left: each element takes at least one,
 * so a 4-byte count can never make a caller loop for more than the body's length. */
static int mp_next(struct mp *m, struct mp_obj *o)
{
	if (m->p >= m->end)
		return mp_short(m, "an object", 1);
	const uint8_t *at = m->p;
	uint8_t b = *m->p++;
	unsigned n = 0; /* bytes of the length or value that follow */
	memset(o, 0, sizeof(*o));
	if (b <= 0x7f) {
		o->kind = MP_UINT, o->u = b;
		return 0;
	}
	if (b >= 0xe0) {
		o->kind = MP_NINT, o->i = (int8_t)b;
		return 0;
	}
	if ((b & 0xf0) == 0x80 || (b & 0xf0) == 0x90) {
		o->kind = (b & 0xf0) == 0x80 ? MP_MAP : MP_ARRAY, o->u = b & 0x0f;
		goto count;
	}
	if ((b & 0xe0) == 0xa0) {
		o->kind = MP_STR, o->len = b & 0x1f;
		goto bytes;
	}
	switch (b) {
	case 0xc0: o->kind = MP_NIL; return 0;
	case 0xc2: case 0xc3: o->kind = MP_BOOL, o->u = b & 1; return 0;
	case 0xc4: case 0xc5: case 0xc6: n = 1u << (b - 0xc4); o->kind = MP_BIN; break;
	case 0xd9: case 0xda: case 0xdb: n = 1u << (b - 0xd9); o->kind = MP_STR; break;
	case 0xcc: case 0xcd: case 0xce: case 0xcf:
		n = 1u << (b - 0xcc);
		if (m->end - m->p < (ptrdiff_t)n)
			return mp_short(m, "an int", n);
		o->kind = MP_UINT, o->u = be(m->p, n), m->p += n;
		return 0;
	case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
		n = 1u << (b - 0xd0);
		if (m->end - m->p < (ptrdiff_t)n)
			return mp_short(m, "an int", n);
		uint64_t v = be(m->p, n);
		m->p += n;
		if (n < 8 && (v >> (8 * n - 1)) & 1) /* sign-extend */
			v |= ~(uint64_t)0 << (8 * n);
		if ((int64_t)v >= 0)
			o->kind = MP_UINT, o->u = v;
		else
			o->kind = MP_NINT, o->i = (int64_t)v;
		return 0;
	}
	case 0xca: case 0xcb:
		n = b == 0xca ? 4 : 8;
		if (m->end - m->p < (ptrdiff_t)n)
			return mp_short(m, "a float", n);
		o->kind = MP_FLOAT, m->p += n; /* skipped, never interpreted */
		return 0;
	case 0xdc: case 0xdd: n = b == 0xdc ? 2 : 4; o->kind = MP_ARRAY; goto count_n;
	case 0xde: case 0xdf: n = b == 0xde ? 2 : 4; o->kind = MP_MAP; goto count_n;
	default:
		return fail(m->err, m->errlen, -EPROTO,
			    "malformed reply: msgpack type 0x%02x at offset %td is not used by the control protocol",
			    b, at - m->base);
	}
	/* bin8/16/32, str8/16/32 */
	if (m->end - m->p < (ptrdiff_t)n)
		return mp_short(m, "a length", n);
	o->len = (uint32_t)be(m->p, n);
	m->p += n;
bytes:
	if ((uint64_t)(m->end - m->p) < o->len)
		return mp_short(m, o->kind == MP_STR ? "a str" : "a bin", o->len);
	o->data = m->p;
	m->p += o->len;
	return 0;
count_n:
	if (m->end - m->p < (ptrdiff_t)n)
		return mp_short(m, "a count", n);
	o->u = be(m->p, n);
	m->p += n;
count:
	if (o->u > (uint64_t)(m->end - m->p) / (o->kind == MP_MAP ? 2 : 1))
		return mp_short(m, o->kind == MP_MAP ? "a map's entries" : "an array's elements",
				o->u * (o->kind == MP_MAP ? 2 : 1));
	return 0;
}

/* Skip one whole object, its elements included, at most `depth` levels deep. */
static int mp_skip(struct mp *m, int depth)
{
	struct mp_obj o;
	int rc = mp_next(m, &o);
	if (rc)
		return rc;
	if (o.kind != MP_ARRAY && o.kind != MP_MAP)
		return 0;
	if (depth <= 0)
		return fail(m->err, m->errlen, -EPROTO,
			    "malformed reply: nested deeper than %d levels at offset %td",
			    MR_CLIENT_MAX_DEPTH, m->p - m->base);
	for (uint64_t k = 0; k < o.u * (o.kind == MP_MAP ? 2 : 1); k++)
		if ((rc = mp_skip(m, depth - 1)))
			return rc;
	return 0;
}

/* A map key: must be a str (the protocol's maps have string keys only). */
static int mp_key(struct mp *m, struct mp_obj *k)
{
	const uint8_t *at = m->p;
	int rc = mp_next(m, k);
	if (rc)
		return rc;
	if (k->kind != MP_STR)
		return fail(m->err, m->errlen, -EPROTO,
			    "malformed reply: a map key at offset %td is a %s, not a str", at - m->base,
			    mp_names[k->kind]);
	return 0;
}

static bool is(const struct mp_obj *s, const char *lit)
{
	size_t n = strlen(lit);
	return s->kind == MP_STR && s->len == n && !memcmp(s->data, lit, n);
}

static int want(struct mp *m, const struct mp_obj *o, enum mp_kind kind, const char *field)
{
	if (o->kind == kind)
		return 0;
	if (o->kind == MP_NINT && kind == MP_UINT)
		return fail(m->err, m->errlen, -EPROTO, "malformed reply: \"%s\" is %lld, expected an int 0 or more",
			    field, (long long)o->i);
	return fail(m->err, m->errlen, -EPROTO, "malformed reply: \"%s\" is a %s, expected a %s", field,
		    mp_names[o->kind], mp_names[kind]);
}

static int want_u32(struct mp *m, const struct mp_obj *o, const char *field, uint32_t *out)
{
	int rc = want(m, o, MP_UINT, field);
	if (rc)
		return rc;
	if (o->u > UINT32_MAX)
		return fail(m->err, m->errlen, -EPROTO, "malformed reply: \"%s\" %llu is above %u", field,
			    (unsigned long long)o->u, UINT32_MAX);
	*out = (uint32_t)o->u;
	return 0;
}

/* Copy a str for the caller's eyes: printable, at most len - 1 bytes. */
static void copy_text(char *dst, size_t len, const struct mp_obj *s)
{
	size_t k = 0;
	if (!dst || !len)
		return;
	for (; k < s->len && k + 1 < len; k++)
		dst[k] = s->data[k] >= 0x20 && s->data[k] != 0x7f ? (char)s->data[k] : '?';
	dst[k] = 0;
}

/*
 * The reply's top: a map with "ok".  ok false: -EREMOTEIO with the daemon's "error" in err.
 * ok true: 0, and *payload points at the value of `key` (NULL `key`: just ok), which the
 * caller decodes from a fresh cursor.  Keys are unordered, so the whole map is walked.
 */
static int reply_top(struct mp *m, const char *key, struct mp *payload)
{
	struct mp_obj o, k;
	int ok = -1, rc;
	const uint8_t *val = NULL, *val_end = NULL;
	struct mp_obj error = { .kind = MP_NIL };

	if ((rc = mp_next(m, &o)))
		return rc;
	if (o.kind != MP_MAP)
		return fail(m->err, m->errlen, -EPROTO, "malformed reply: a %s, not a map",
			    mp_names[o.kind]);
	for (uint64_t e = 0; e < o.u; e++) {
		if ((rc = mp_key(m, &k)))
			return rc;
		if (is(&k, "ok")) {
			struct mp_obj v;
			if ((rc = mp_next(m, &v)) || (rc = want(m, &v, MP_BOOL, "ok")))
				return rc;
			ok = (int)v.u;
		} else if (is(&k, "error")) {
			if ((rc = mp_next(m, &error)))
				return rc;
			if (error.kind == MP_ARRAY || error.kind == MP_MAP)
				return want(m, &error, MP_STR, "error");
		} else if (key && is(&k, key)) {
			val = m->p;
			if ((rc = mp_skip(m, MR_CLIENT_MAX_DEPTH)))
				return rc;
			val_end = m->p;
		} else if ((rc = mp_skip(m, MR_CLIENT_MAX_DEPTH))) {
			return rc;
		}
	}
	if (m->p != m->end)
		return fail(m->err, m->errlen, -EPROTO, "malformed reply: %td bytes after the map",
			    m->end - m->p);
	if (ok < 0)
		return fail(m->err, m->errlen, -EPROTO, "malformed reply: no \"ok\"");
	if (!ok) {
		if (error.kind == MP_STR)
			copy_text(m->err, m->errlen, &error);
		else
			fail(m->err, m->errlen, 0, "the daemon refused the request without a reason");
		return -EREMOTEIO;
	}
	if (key && !val)
		return fail(m->err, m->errlen, -EPROTO, "malformed reply: no \"%s\"", key);
	if (payload)
		*payload = (struct mp){ .base = m->base, .p = val, .end = val_end, .err = m->err,
					.errlen = m->errlen };
	return 0;
}

/* One session map of the config reply: does `ingress` appear in its "input"? */
static int parse_session(struct mp *m, const char *ingress, struct mr_tap_rule *r, bool *match)
{
	struct mp_obj o, k, v;
	int rc;
	struct mr_tap_rule s = { 0 };

	*match = false;
	if ((rc = mp_next(m, &o)) || (rc = want(m, &o, MP_MAP, "sessions[]")))
		return rc;
	for (uint64_t e = 0; e < o.u; e++) {
		if ((rc = mp_key(m, &k)))
			return rc;
		if (is(&k, "input")) {
			if ((rc = mp_next(m, &v)) || (rc = want(m, &v, MP_ARRAY, "input")))
				return rc;
			for (uint64_t a = 0; a < v.u; a++) {
				struct mp_obj name;
				if ((rc = mp_next(m, &name)) || (rc = want(m, &name, MP_STR, "input[]")))
					return rc;
				if (is(&name, ingress))
					*match = true;
			}
			continue;
		}
		uint32_t *dst = is(&k, "id") ? &s.session_id : is(&k, "rate") ? &s.rate
			      : is(&k, "run_length") ? &s.run_length
			      : is(&k, "max_packet_length") ? &s.max_len : NULL;
		if (!dst) {
			if ((rc = mp_skip(m, MR_CLIENT_MAX_DEPTH - 3)))
				return rc;
			continue;
		}
		char field[32];
		snprintf(field, sizeof(field), "%.*s", (int)k.len, (const char *)k.data);
		if ((rc = mp_next(m, &v)) || (rc = want_u32(m, &v, field, dst)))
			return rc;
	}
	if (*match) {
		if (!s.session_id)
			return fail(m->err, m->errlen, -EPROTO,
				    "malformed reply: the session of %s has no \"id\" (or id 0)", ingress);
		*r = s;
	}
	return 0;
}

/* The config map: instance, generation, and the rule of the session whose input is ingress. */
static int parse_config(struct mp *m, const char *ingress, struct mr_tap_rule *rule, uint64_t *gen,
			char *instance, size_t instance_len)
{
	struct mp_obj o, k, v;
	int rc, found = 0, have_gen = 0;

	memset(rule, 0, sizeof(*rule));
	if ((rc = mp_next(m, &o)) || (rc = want(m, &o, MP_MAP, "config")))
		return rc;
	for (uint64_t e = 0; e < o.u; e++) {
		if ((rc = mp_key(m, &k)))
			return rc;
		if (is(&k, "generation")) {
			if ((rc = mp_next(m, &v)) || (rc = want(m, &v, MP_UINT, "generation")))
				return rc;
			*gen = v.u, have_gen = 1;
		} else if (is(&k, "instance")) {
			if ((rc = mp_next(m, &v)) || (rc = want(m, &v, MP_STR, "instance")))
				return rc;
			if (instance && instance_len && v.len >= instance_len)
				return fail(m->err, m->errlen, -ENOSPC,
					    "the daemon's instance token (%u bytes) does not fit in %zu bytes",
					    v.len, instance_len);
			copy_text(instance, instance_len, &v);
		} else if (is(&k, "sessions")) {
			if ((rc = mp_next(m, &v)) || (rc = want(m, &v, MP_ARRAY, "sessions")))
				return rc;
			for (uint64_t s = 0; s < v.u; s++) {
				struct mr_tap_rule r;
				bool match;
				if ((rc = parse_session(m, ingress, &r, &match)))
					return rc;
				if (match && found++)
					return fail(m->err, m->errlen, -EPROTO,
						    "malformed reply: %s is the input of two sessions (ids %u and %u)",
						    ingress, rule->session_id, r.session_id);
				if (match)
					*rule = r;
			}
		} else if ((rc = mp_skip(m, MR_CLIENT_MAX_DEPTH - 1))) {
			return rc;
		}
	}
	if (!have_gen)
		return fail(m->err, m->errlen, -EPROTO, "malformed reply: config has no \"generation\"");
	return 0;
}

/* ------------------------------------------------------------------ the table (mr_client__rules) */

/*
 * The whole table for one ingress, as mirrord/forwarder/follow.py computes it (tables(),
 * rules_for()).  One pass over the sessions; every session is checked as tables() checks it
 * (a reply the reference forwarder refuses is refused here too), and only what this ingress
 * needs is kept: at most one default candidate of each kind and MR_TAP_MAX_VLAN_RULES VID
 * rules, each a few words and a pointer into the reply body.  Nothing is allocated for
 * what the daemon says; out is written at the end, once everything was accepted.
 */

struct t_sess {             /* one session's part of a rule */
	struct mr_tap_rule r;
	const uint8_t *prog;        /* its filter_program in the reply body (unaligned) */
	uint32_t nprog;             /* instructions */
	uint32_t flags;             /* MR_TAP_RULE_WHEN_LISTENED when "when_listened" is true */
	uint32_t index;             /* sessions[index], for messages */
};

struct t_vid {
	uint32_t vid;
	struct t_sess s;
};

struct t_state {
	const char *ingress;
	size_t ingress_len;
	struct bpf_insn *scratch;   /* MR_TAP_MAX_INSNS, aligned, for bpf_validate */
	struct t_sess def_key, def_label; /* (ingress, 0); a VLAN input labelled ingress */
	bool have_key, have_label;
	uint32_t nvid;
	struct t_vid vid[MR_TAP_MAX_VLAN_RULES];
};

static bool is_n(const struct mp_obj *s, const char *lit, size_t n)
{
	return s->kind == MP_STR && s->len == n && !memcmp(s->data, lit, n);
}

/* One resolved input (interface, vid, label) of session s: keep what ingress needs
 * (rules_for: by_key (ingress, 0); by_label for a VID input labelled ingress; every
 * (ingress, VID)).  Python's dicts keep the last of two equal keys; a daemon never sends
 * two (check-config refuses an input taken twice), so here it is refused, never guessed. */
static int t_input(struct mp *m, struct t_state *t, const struct t_sess *s, const struct mp_obj *iface,
		   uint32_t vid, const struct mp_obj *label)
{
	bool on = is_n(iface, t->ingress, t->ingress_len);
	if (on && !vid) {
		if (t->have_key)
			return fail(m->err, m->errlen, -EPROTO,
				    "malformed reply: \"input\": %s is the input of two sessions (sessions[%u] and sessions[%u])",
				    t->ingress, t->def_key.index, s->index);
		t->def_key = *s, t->have_key = true;
	}
	if (vid && label && is_n(label, t->ingress, t->ingress_len)) {
		if (t->have_label)
			return fail(m->err, m->errlen, -EPROTO,
				    "malformed reply: \"inputs\": the label %s names two VLAN inputs (sessions[%u] and sessions[%u])",
				    t->ingress, t->def_label.index, s->index);
		t->def_label = *s, t->have_label = true;
	}
	if (on && vid) {
		for (uint32_t k = 0; k < t->nvid; k++)
			if (t->vid[k].vid == vid)
				return fail(m->err, m->errlen, -EPROTO,
					    "malformed reply: \"inputs\": %s VLAN %u is the input of two sessions (sessions[%u] and sessions[%u])",
					    t->ingress, vid, t->vid[k].s.index, s->index);
		if (t->nvid == MR_TAP_MAX_VLAN_RULES)
			return fail(m->err, m->errlen, -EPROTO,
				    "malformed reply: \"sessions[%u].inputs\": more than %d VLAN inputs on %s (the tap's bound per binding)",
				    s->index, MR_TAP_MAX_VLAN_RULES, t->ingress);
		t->vid[t->nvid++] = (struct t_vid){ .vid = vid, .s = *s };
	}
	return 0;
}

/* "input": a list of str; matched (VLAN 0, label = the name) only when there is no
 * "inputs" (an older daemon). */
static int t_plain_inputs(struct mp *m, struct t_state *t, const struct t_sess *s, bool match)
{
	struct mp_obj v, name;
	char field[48];
	int rc;
	snprintf(field, sizeof(field), "sessions[%u].input", s->index);
	if ((rc = mp_next(m, &v)) || (rc = want(m, &v, MP_ARRAY, field)))
		return rc;
	snprintf(field, sizeof(field), "sessions[%u].input[]", s->index);
	for (uint64_t a = 0; a < v.u; a++) {
		if ((rc = mp_next(m, &name)) || (rc = want(m, &name, MP_STR, field)))
			return rc;
		if (match && (rc = t_input(m, t, s, &name, 0, &name)))
			return rc;
	}
	return 0;
}

/* "inputs": the daemon's resolution, a list of {interface: str, vlan: 0-4094, name: str}. */
static int t_vlan_inputs(struct mp *m, struct t_state *t, const struct t_sess *s)
{
	struct mp_obj v, e, k, x;
	char field[64];
	int rc;
	snprintf(field, sizeof(field), "sessions[%u].inputs", s->index);
	if ((rc = mp_next(m, &v)) || (rc = want(m, &v, MP_ARRAY, field)))
		return rc;
	for (uint64_t a = 0; a < v.u; a++) {
		struct mp_obj iface = { .kind = MP_NIL }, name = { .kind = MP_NIL };
		uint64_t vid = 0;
		bool have_vid = false;
		snprintf(field, sizeof(field), "sessions[%u].inputs[%llu]", s->index, (unsigned long long)a);
		if ((rc = mp_next(m, &e)) || (rc = want(m, &e, MP_MAP, field)))
			return rc;
		for (uint64_t f = 0; f < e.u; f++) {
			if ((rc = mp_key(m, &k)))
				return rc;
			const char *what = is(&k, "interface") ? "interface" : is(&k, "name") ? "name"
					 : is(&k, "vlan") ? "vlan" : NULL;
			if (!what) {
				if ((rc = mp_skip(m, MR_CLIENT_MAX_DEPTH - 5)))
					return rc;
				continue;
			}
			snprintf(field, sizeof(field), "sessions[%u].inputs[%llu].%s", s->index,
				 (unsigned long long)a, what);
			if ((rc = mp_next(m, &x)) || (rc = want(m, &x, what[0] == 'v' ? MP_UINT : MP_STR, field)))
				return rc;
			if (what[0] == 'i')
				iface = x;
			else if (what[0] == 'n')
				name = x;
			else if (x.u > 4094)
				return fail(m->err, m->errlen, -EPROTO,
					    "malformed reply: \"%s\" %llu is not a VLAN ID (0 to 4094)", field,
					    (unsigned long long)x.u);
			else
				vid = x.u, have_vid = true;
		}
		if (iface.kind != MP_STR || name.kind != MP_STR || !have_vid)
			return fail(m->err, m->errlen, -EPROTO,
				    "malformed reply: \"sessions[%u].inputs[%llu]\" needs \"interface\", \"vlan\" and \"name\"",
				    s->index, (unsigned long long)a);
		if ((rc = t_input(m, t, s, &iface, (uint32_t)vid, &name)))
			return rc;
	}
	return 0;
}

/* One session: its fields (keys in any order), then its inputs, read again from where the
 * first pass saw them (the first pass checked that they are whole objects). */
static int t_session(struct mp *m, struct t_state *t, uint32_t index)
{
	struct mp_obj o, k, v;
	const uint8_t *input = NULL, *inputs = NULL;
	bool have[4] = { false };
	static const char *const names[4] = { "id", "rate", "run_length", "max_packet_length" };
	uint32_t vals[4] = { 0 };
	struct t_sess s = { .index = index };
	char field[64];
	int rc;

	snprintf(field, sizeof(field), "sessions[%u]", index);
	if ((rc = mp_next(m, &o)) || (rc = want(m, &o, MP_MAP, field)))
		return rc;
	for (uint64_t e = 0; e < o.u; e++) {
		if ((rc = mp_key(m, &k)))
			return rc;
		int which = -1;
		for (int j = 0; j < 4; j++)
			if (is(&k, names[j]))
				which = j;
		if (which >= 0) {
			snprintf(field, sizeof(field), "sessions[%u].%s", index, names[which]);
			if ((rc = mp_next(m, &v)) || (rc = want_u32(m, &v, field, &vals[which])))
				return rc;
			have[which] = true;
		} else if (is(&k, "filter_program")) {
			snprintf(field, sizeof(field), "sessions[%u].filter_program", index);
			if ((rc = mp_next(m, &v)) || (rc = want(m, &v, MP_BIN, field)))
				return rc;
			if (v.len % sizeof(struct bpf_insn))
				return fail(m->err, m->errlen, -EPROTO,
					    "malformed reply: \"%s\" is %u bytes, not a whole number of %zu-byte instructions",
					    field, v.len, sizeof(struct bpf_insn));
			if (v.len / sizeof(struct bpf_insn) > MR_TAP_MAX_INSNS)
				return fail(m->err, m->errlen, -EPROTO,
					    "malformed reply: \"%s\" has %zu instructions, at most %d", field,
					    v.len / sizeof(struct bpf_insn), MR_TAP_MAX_INSNS);
			s.prog = v.data, s.nprog = (uint32_t)(v.len / sizeof(struct bpf_insn));
			/* libpcap's checks, on an aligned copy (the bin sits anywhere in the body) */
			memcpy(t->scratch, v.data, v.len);
			if (s.nprog && !bpf_validate(t->scratch, (int)s.nprog))
				return fail(m->err, m->errlen, -EPROTO,
					    "malformed reply: \"%s\" is not a valid classic BPF program (libpcap's bpf_validate refuses it)",
					    field);
		} else if (is(&k, "filter")) {
			snprintf(field, sizeof(field), "sessions[%u].filter", index);
			if ((rc = mp_next(m, &v)) || (rc = want(m, &v, MP_STR, field)))
				return rc;
		} else if (is(&k, "when_listened")) {
			/* follow.py: `s.get("when_listened") is True`; any other value is no flag */
			const uint8_t *at = m->p;
			if ((rc = mp_next(m, &v)))
				return rc;
			m->p = at;
			if ((rc = mp_skip(m, MR_CLIENT_MAX_DEPTH - 3)))
				return rc;
			s.flags = v.kind == MP_BOOL && v.u ? MR_TAP_RULE_WHEN_LISTENED : 0;
		} else if (is(&k, "input") || is(&k, "inputs")) {
			*(is(&k, "input") ? &input : &inputs) = m->p;
			if ((rc = mp_skip(m, MR_CLIENT_MAX_DEPTH - 3)))
				return rc;
		} else if ((rc = mp_skip(m, MR_CLIENT_MAX_DEPTH - 3))) {
			return rc;
		}
	}
	for (int j = 0; j < 4; j++)
		if (!have[j])
			return fail(m->err, m->errlen, -EPROTO,
				    "malformed reply: \"sessions[%u].%s\" is missing (an integer 0 to %u)", index,
				    names[j], UINT32_MAX);
	s.r = (struct mr_tap_rule){ .session_id = vals[0], .rate = vals[1], .run_length = vals[2],
				    .max_len = vals[3] };
	if (!input)
		return fail(m->err, m->errlen, -EPROTO,
			    "malformed reply: \"sessions[%u].input\" is missing (a list of interface names)", index);
	struct mp again = *m;
	again.p = input;
	if ((rc = t_plain_inputs(&again, t, &s, inputs == NULL)))
		return rc;
	if (inputs) {
		again.p = inputs;
		if ((rc = t_vlan_inputs(&again, t, &s)))
			return rc;
	}
	return 0;
}

static void t_sort(struct t_vid *v, uint32_t n)
{
	for (uint32_t i = 1; i < n; i++) /* at most MR_TAP_MAX_VLAN_RULES: insertion sort */
		for (uint32_t j = i; j && v[j - 1].vid > v[j].vid; j--) {
			struct t_vid x = v[j];
			v[j] = v[j - 1], v[j - 1] = x;
		}
}

static void t_put(struct mr_client_rules *out, uint32_t vid, const struct t_sess *s)
{
	struct mr_tap_vlan_rule *r = &out->rules[out->n++];
	*r = (struct mr_tap_vlan_rule){ .vid = vid, .flags = s->flags, .rule = s->r };
	if (s->nprog) {
		r->filter = &out->insns[out->ninsns];
		r->filter_len = s->nprog;
		memcpy(&out->insns[out->ninsns], s->prog, (size_t)s->nprog * sizeof(struct mr_tap_insn));
		out->ninsns += s->nprog;
	}
}

/* The config map: instance, generation, and the table for t->ingress into out. */
static int parse_rules(struct mp *m, struct t_state *t, struct mr_client_rules *out)
{
	struct mp_obj o, k, v, instance = { .kind = MP_NIL };
	uint64_t gen = 0;
	bool have_gen = false, have_sessions = false;
	int rc;

	if ((rc = mp_next(m, &o)) || (rc = want(m, &o, MP_MAP, "config")))
		return rc;
	for (uint64_t e = 0; e < o.u; e++) {
		if ((rc = mp_key(m, &k)))
			return rc;
		if (is(&k, "generation")) {
			if ((rc = mp_next(m, &v)) || (rc = want(m, &v, MP_UINT, "generation")))
				return rc;
			gen = v.u, have_gen = true;
		} else if (is(&k, "instance")) {
			if ((rc = mp_next(m, &instance)) || (rc = want(m, &instance, MP_STR, "instance")))
				return rc;
			if (instance.len >= MR_CLIENT_MAX_INSTANCE)
				return fail(m->err, m->errlen, -EPROTO,
					    "malformed reply: \"instance\" is %u bytes, at most %d", instance.len,
					    MR_CLIENT_MAX_INSTANCE - 1);
		} else if (is(&k, "sessions")) {
			if ((rc = mp_next(m, &v)) || (rc = want(m, &v, MP_ARRAY, "sessions")))
				return rc;
			for (uint64_t s = 0; s < v.u; s++)
				if ((rc = t_session(m, t, (uint32_t)s)))
					return rc;
			have_sessions = true;
		} else if ((rc = mp_skip(m, MR_CLIENT_MAX_DEPTH - 1))) {
			return rc;
		}
	}
	if (!have_gen || instance.kind != MP_STR || !have_sessions)
		return fail(m->err, m->errlen, -EPROTO,
			    "malformed reply: config has no \"%s\" (is the daemon older than libmirrord?)",
			    !have_gen ? "generation" : !have_sessions ? "sessions" : "instance");
	const struct t_sess *def = t->have_key ? &t->def_key : t->have_label ? &t->def_label : NULL;
	uint64_t total = def ? def->nprog : 0;
	for (uint32_t i = 0; i < t->nvid; i++)
		total += t->vid[i].s.nprog;
	if (total > MR_TAP_MAX_TABLE_INSNS)
		return fail(m->err, m->errlen, -EPROTO,
			    "malformed reply: \"filter_program\": the rules for %s hold %llu filter instructions, at most %d per table",
			    t->ingress, (unsigned long long)total, MR_TAP_MAX_TABLE_INSNS);
	/* accepted: now out */
	t_sort(t->vid, t->nvid);
	out->generation = gen;
	copy_text(out->instance, sizeof(out->instance), &instance);
	out->n = out->ninsns = 0;
	if (def)
		t_put(out, 0, def);
	for (uint32_t i = 0; i < t->nvid; i++)
		t_put(out, t->vid[i].vid, &t->vid[i].s);
	return 0;
}

/* ------------------------------------------------------------------ encoder */

struct enc {
	uint8_t buf[4 + 16 + 3 * (5 + 8) + 4096 + 64];
	size_t n;
};

static void put_str(struct enc *e, const char *s)
{
	size_t n = strlen(s); /* callers bound it far below 64 KiB */
	if (n < 32) {
		e->buf[e->n++] = (uint8_t)(0xa0 | n);
	} else if (n < 256) {
		e->buf[e->n++] = 0xd9, e->buf[e->n++] = (uint8_t)n;
	} else {
		e->buf[e->n++] = 0xda, e->buf[e->n++] = (uint8_t)(n >> 8), e->buf[e->n++] = (uint8_t)n;
	}
	memcpy(e->buf + e->n, s, n);
	e->n += n;
}

/* {"op": op[, key: val]} framed: the 4-byte big-endian length, then the map. */
static void encode(struct enc *e, const char *op, const char *key, const char *val)
{
	e->n = 4;
	e->buf[e->n++] = (uint8_t)(0x80 | (key ? 2 : 1));
	put_str(e, "op");
	put_str(e, op);
	if (key) {
		put_str(e, key);
		put_str(e, val);
	}
	uint32_t len = (uint32_t)(e->n - 4);
	e->buf[0] = (uint8_t)(len >> 24), e->buf[1] = (uint8_t)(len >> 16);
	e->buf[2] = (uint8_t)(len >> 8), e->buf[3] = (uint8_t)len;
}

/* ------------------------------------------------------------------ transport */

static int wait_fd(int fd, short ev)
{
	struct pollfd p = { .fd = fd, .events = ev };
	int rc;
	do
		rc = poll(&p, 1, MR_CLIENT_TIMEOUT_MS);
	while (rc < 0 && errno == EINTR);
	return rc < 0 ? -errno : rc == 0 ? -ETIMEDOUT : 0;
}

static int send_frame(struct mr_client *c, const struct enc *e, const int *fds, unsigned nfds,
		      char *err, size_t errlen)
{
	size_t off = 0;
	while (off < e->n) {
		struct iovec iov = { .iov_base = (void *)(e->buf + off), .iov_len = e->n - off };
		union {
			char buf[CMSG_SPACE(2 * sizeof(int))];
			struct cmsghdr align;
		} ctl;
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
		if (nfds && off == 0) { /* the descriptors travel with the first byte */
			memset(&ctl, 0, sizeof(ctl));
			mh.msg_control = ctl.buf;
			mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
			struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
			memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
		}
		ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
			int rc = wait_fd(c->fd, POLLOUT);
			if (rc)
				return fail(err, errlen, rc, "control socket: send: %s", strerror(-rc));
			continue;
		}
		if (w < 0)
			return fail(err, errlen, -errno, "control socket: send: %s", strerror(errno));
		off += (size_t)w;
	}
	return 0;
}

static int recv_exact(struct mr_client *c, uint8_t *buf, size_t n, char *err, size_t errlen)
{
	size_t off = 0;
	while (off < n) {
		ssize_t r = recv(c->fd, buf + off, n - off, MSG_DONTWAIT);
		if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
			int rc = wait_fd(c->fd, POLLIN);
			if (rc)
				return fail(err, errlen, rc, "control socket: receive: %s", strerror(-rc));
			continue;
		}
		if (r < 0)
			return fail(err, errlen, -errno, "control socket: receive: %s", strerror(errno));
		if (r == 0)
			return fail(err, errlen, -ECONNRESET,
				    "control socket closed before a whole reply (%zu of %zu bytes)", off, n);
		off += (size_t)r;
	}
	return 0;
}

/* One reply body, malloc'ed (the caller frees it). */
static int recv_reply(struct mr_client *c, uint8_t **body, uint32_t *len, char *err, size_t errlen)
{
	uint8_t head[4];
	int rc = recv_exact(c, head, 4, err, errlen);
	if (rc)
		return rc;
	*len = (uint32_t)be(head, 4);
	if (*len > MR_CLIENT_MAX_MESSAGE || *len == 0)
		return fail(err, errlen, -EPROTO, "a reply of %u bytes (expected 1 to %u)", *len,
			    MR_CLIENT_MAX_MESSAGE);
	if (!(*body = malloc(*len)))
		return fail(err, errlen, -ENOMEM, "no memory for a reply of %u bytes", *len);
	if ((rc = recv_exact(c, *body, *len, err, errlen))) {
		free(*body);
		*body = NULL;
	}
	return rc;
}

/* ------------------------------------------------------------------ API */

MR_EXPORT int mr_client__connect(struct mr_client **out, const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct mr_client *c;
	int rc;

	*out = NULL;
	if (!path || !*path || strlen(path) >= sizeof(sa.sun_path))
		return fail(err, errlen, -EINVAL, "control socket path must be 1 to %zu bytes",
			    sizeof(sa.sun_path) - 1);
	strcpy(sa.sun_path, path);
	if (!(c = calloc(1, sizeof(*c))))
		return fail(err, errlen, -ENOMEM, "no memory");
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (c->fd < 0) {
		rc = fail(err, errlen, -errno, "socket: %s", strerror(errno));
		goto out;
	}
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (errno != EINPROGRESS && errno != EAGAIN) {
			rc = fail(err, errlen, -errno, "connect to %s: %s", path, strerror(errno));
			goto out;
		}
		int soerr = 0;
		socklen_t sl = sizeof(soerr);
		if ((rc = wait_fd(c->fd, POLLOUT))) {
			fail(err, errlen, rc, "connect to %s: %s", path, strerror(-rc));
			goto out;
		}
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr) {
			rc = fail(err, errlen, -(soerr ? soerr : errno), "connect to %s: %s", path,
				  strerror(soerr ? soerr : errno));
			goto out;
		}
	}
	*out = c;
	return 0;
out:
	mr_client__close(c);
	return rc;
}

MR_EXPORT void mr_client__close(struct mr_client *c)
{
	if (!c)
		return;
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}

/* One request, one reply: 0 with *m over the reply's `key` value (body to free). */
static int request(struct mr_client *c, const struct enc *e, const int *fds, unsigned nfds,
		   const char *key, uint8_t **body, struct mp *m, char *err, size_t errlen)
{
	uint32_t len;
	int rc;

	*body = NULL;
	if ((rc = send_frame(c, e, fds, nfds, err, errlen)) || (rc = recv_reply(c, body, &len, err, errlen)))
		return rc;
	struct mp top = { .base = *body, .p = *body, .end = *body + len, .err = err, .errlen = errlen };
	return reply_top(&top, key, m);
}

static bool good_name(const char *name)
{
	size_t n = name ? strlen(name) : 0;
	if (!n || n > 64)
		return false;
	for (size_t k = 0; k < n; k++)
		if ((unsigned char)name[k] < 0x20 || name[k] == 0x7f || name[k] == '/')
			return false;
	return true;
}

MR_EXPORT int mr_client__register_fds(struct mr_client *c, int ring_fd, int eventfd, const char *path,
			    const char *name, char *err, size_t errlen)
{
	struct enc e;
	struct mp m;
	uint8_t *body;
	int fds[2] = { ring_fd, eventfd };

	if (ring_fd < 0)
		return fail(err, errlen, -EBADF, "register: no ring descriptor");
	if (path && *path) {
		if (path[0] != '/' || strlen(path) > 4096)
			return fail(err, errlen, -EINVAL,
				    "register: \"path\" must be an absolute path of at most 4096 bytes");
		encode(&e, "register", "path", path);
	} else {
		if (!good_name(name))
			return fail(err, errlen, -EINVAL,
				    "register: \"name\" must be 1-64 printable characters without \"/\"");
		encode(&e, "register", "name", name);
	}
	int rc = request(c, &e, fds, eventfd >= 0 ? 2 : 1, NULL, &body, &m, err, errlen);
	free(body);
	return rc;
}

MR_EXPORT int mr_client__register(struct mr_client *c, struct mr_tap *t, const char *name, char *err,
			size_t errlen)
{
	int ring_fd = -1, efd = -1;
	int rc = mr_tap__ring_fds(t, &ring_fd, &efd);
	if (rc)
		return fail(err, errlen, rc, "register: the tap has no ring (%s)", strerror(-rc));
	return mr_client__register_fds(c, ring_fd, efd, mr_tap__ring_path(t), name, err, errlen);
}

MR_EXPORT int mr_client__rule(struct mr_client *c, const char *ingress, struct mr_tap_rule *out,
		    uint64_t *generation, char *instance, size_t instance_len, char *err, size_t errlen)
{
	struct enc e;
	struct mp m;
	uint8_t *body;
	uint64_t gen = 0;
	struct mr_tap_rule r;

	if (!ingress || !*ingress || strlen(ingress) > 255)
		return fail(err, errlen, -EINVAL, "ingress must be an interface name of 1 to 255 bytes");
	encode(&e, "config", NULL, NULL);
	int rc = request(c, &e, NULL, 0, "config", &body, &m, err, errlen);
	if (!rc)
		rc = parse_config(&m, ingress, &r, &gen, instance, instance_len);
	free(body);
	if (rc)
		return rc;
	*out = r;
	if (generation)
		*generation = gen;
	return 0;
}

MR_EXPORT int mr_client__rules(struct mr_client *c, const char *ingress, struct mr_client_rules *out, char *err,
			       size_t errlen)
{
	struct enc e;
	struct mp m;
	uint8_t *body;

	if (!ingress || !*ingress || strlen(ingress) > 255)
		return fail(err, errlen, -EINVAL, "ingress must be an interface name of 1 to 255 bytes");
	if (!out)
		return fail(err, errlen, -EINVAL, "rules: no struct mr_client_rules to fill");
	/* the state is small (a few KiB); the aligned copy for bpf_validate is a fixed 32 KiB */
	struct t_state *t = calloc(1, sizeof(*t));
	struct bpf_insn *scratch = malloc(MR_TAP_MAX_INSNS * sizeof(struct bpf_insn));
	if (!t || !scratch) {
		free(t), free(scratch);
		return fail(err, errlen, -ENOMEM, "no memory");
	}
	t->ingress = ingress, t->ingress_len = strlen(ingress), t->scratch = scratch;
	encode(&e, "config", NULL, NULL);
	int rc = request(c, &e, NULL, 0, "config", &body, &m, err, errlen);
	if (!rc)
		rc = parse_rules(&m, t, out);
	free(body);
	free(scratch);
	free(t);
	return rc;
}
