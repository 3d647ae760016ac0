/* SPDX-License-Identifier: MIT */
/* The embeddable mirror tap; see include/mirrord/tap.h.  The one implementation of the
 * mirroring rules: `mirrord forward` (forward.c) calls it like any other forwarder. */
#include "mirrord/tap.h"
#include "mirrord/ring.h"
#include "util.h"

#include <errno.h>
#include <sys/types.h> /* u_int and u_char, which pcap/bpf.h uses */
#include <pcap/bpf.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Written by the packet thread only, read by anyone (mr_tap__counters): relaxed both ways,
 * statistics that order nothing else.  One writer, so an add is a relaxed load and store,
 * not a locked read-modify-write. */
struct tap_counters {
	_Atomic uint64_t seen, sampled, pushed, dropped_ring_full, dropped_no_ring, dropped_ring_lost,
		rule_generation;
};
_Static_assert(sizeof(struct tap_counters) == sizeof(struct mr_tap_counters),
	       "a counter of struct mr_tap_counters is missing from struct tap_counters");

#define CADD(t, field, n)                                                                        \
	atomic_store_explicit(&(t)->c.field,                                                     \
			      atomic_load_explicit(&(t)->c.field, memory_order_relaxed) + (n),   \
			      memory_order_relaxed)

_Static_assert(sizeof(struct mr_tap_insn) == sizeof(struct bpf_insn), "struct mr_tap_insn is struct bpf_insn");

/* A table as mr_tap__set_rules allocates it: the rules and their filters in one block,
 * swapped whole.  rules[0] is the default rule. */
struct block_rule {
	uint32_t vid, flags;
	struct mr_tap_rule r;
	uint32_t prog_off, nprog;   /* its filter: prog[prog_off .. prog_off + nprog) */
};
#define NRULES (1 + MR_TAP_MAX_VLAN_RULES)
struct rule_block {
	uint32_t nrules, nprog;
	struct block_rule rules[NRULES];
	struct bpf_insn prog[];
};

/* One rule's sampling state (the packet thread's alone) and counters (read by anyone).  A
 * slot belongs to one (vid, session) while rules with that pair follow each other in the
 * tables set; `key` names it, and changes as a seqlock's sequence does when the slot is
 * given to another pair (see adopt_slots and mr_tap__rule_counters). */
struct rule_slot {
	_Atomic uint64_t key;       /* 0: free; else KEY(uses, vid, session_id) */
	uint64_t k;                 /* sampling counter of this (binding, session) */
	uint32_t run_left;
	uint32_t uses;              /* times the slot was given out: the key's ABA guard */
	_Atomic uint64_t seen, filtered, sampled, pushed, dropped_ring_full, dropped_no_ring, dropped_ring_lost,
		skipped_no_listener;
};
#define KEY_ID(vid, sid) ((uint64_t)1 << 44 | (uint64_t)(vid) << 32 | (uint64_t)(sid))
#define KEY_ID_MASK (((uint64_t)1 << 45) - 1)
#define KEY(uses, vid, sid) ((uint64_t)(uses) << 45 | KEY_ID(vid, sid))

/* the packet thread's copy of one rule of the table in force */
struct local_rule {
	struct mr_tap_rule r;
	uint32_t vid, flags;
	uint32_t prog_off, nprog;
	struct rule_slot *s;        /* NULL: session 0 */
};

struct mr_tap {
	/* the packet thread's own state, first: what every burst touches */
	uint32_t nrules;             /* rules in force, the default rule first (at least 1) */
	struct local_rule rules[NRULES];
	uint8_t by_vid[4096];        /* the rule of each outer VID: an index into rules, 0 the default */
	_Atomic uint64_t filtered;   /* frames a filter rejected, all rules (packet thread writes) */
	_Atomic uint64_t skipped;    /* sampled, not copied: nobody listens (packet thread writes) */
	uint64_t local_gen;          /* the generation it copied */
	int has_ring;
	struct mr_prod ring;
	struct tap_counters c;
	struct rule_slot slots[NRULES];
	/* shared with mr_tap__set_rules (any thread), each on its own line */
	_Alignas(MR_CACHELINE) _Atomic(struct rule_block *) rule;
	_Atomic uint64_t gen;        /* bumped by mr_tap__set_rules after swapping rule */
	_Alignas(MR_CACHELINE) _Atomic int reading; /* 1 while the packet thread copies *rule */
	struct bpf_insn prog[MR_TAP_MAX_TABLE_INSNS]; /* the packet thread's copy of the filters */
	/* the packet thread's: a multi-buffer frame gathered for its filter, so that loads past
	 * the first fragment see the frame's bytes as tcpdump would (bpf_filter takes one buffer) */
	uint8_t linear[MR_FRAME_MAX];
};

static int tap_new(struct mr_tap **out)
{
	struct mr_tap *t = aligned_alloc(MR_CACHELINE, (sizeof(*t) + MR_CACHELINE - 1) & ~(size_t)(MR_CACHELINE - 1));
	if (!t)
		return -ENOMEM;
	memset(t, 0, sizeof(*t));
	t->nrules = 1; /* the default rule, session 0 */
	t->ring.fd = t->ring.efd = -1;
	*out = t;
	return 0;
}

MR_EXPORT int mr_tap__create(struct mr_tap **out, const char *ring_path, uint32_t data_size, const char *name,
			     char *err, size_t errlen)
{
	struct mr_tap *t;
	*out = NULL;
	if (tap_new(&t))
		return fail(err, errlen, -ENOMEM, "tap: out of memory");
	int r = mr_prod__create(&t->ring, ring_path, data_size, 0, name, err, errlen);
	if (r) {
		free(t);
		return r;
	}
	t->has_ring = 1;
	*out = t;
	return 0;
}

MR_EXPORT int mr_tap__create_no_ring(struct mr_tap **out)
{
	*out = NULL;
	return tap_new(out);
}

MR_EXPORT void mr_tap__destroy(struct mr_tap *t)
{
	if (!t)
		return;
	if (t->has_ring)
		mr_prod__destroy(&t->ring, 1);
	/* relaxed: the packet thread is done with the tap (the caller's contract) */
	free(atomic_load_explicit(&t->rule, memory_order_relaxed));
	free(t);
}

/*
 * The table swap, RCU style with the shortest possible read side.  The packet thread reads
 * a table only to copy it (its rules, and its filters' instructions), and only when the
 * generation changed; around that copy it raises `reading`.  The writer publishes the new
 * table, bumps the generation, and waits until it sees `reading` down once: after that no
 * copy of the old table can start (the seq_cst store of reading = 1 and the load of rule
 * that follows it, against the writer's seq_cst exchange of rule and load of reading, form
 * a Dekker pair: either the packet thread's load of rule sees the new table, or the writer
 * sees reading == 1 and waits for the release store of reading = 0 that ends the copy).
 * No packet thread that is merely idle holds up a writer, and several writers may swap at
 * once: each frees the table its own exchange took out.
 */
MR_EXPORT int mr_tap__set_rule(struct mr_tap *t, const struct mr_tap_rule *r)
{
	return mr_tap__set_rule_filter(t, r, NULL, 0);
}

MR_EXPORT int mr_tap__set_rule_filter(struct mr_tap *t, const struct mr_tap_rule *r, const struct mr_tap_insn *insns,
				      uint32_t ninsns)
{
	if (!r)
		return -EINVAL;
	struct mr_tap_vlan_rule d = {.vid = 0, .rule = *r, .filter = insns, .filter_len = insns ? ninsns : 0};
	return mr_tap__set_rules(t, &d, 1);
}

MR_EXPORT int mr_tap__set_rules(struct mr_tap *t, const struct mr_tap_vlan_rule *rules, uint32_t n)
{
	if (!t || (n && !rules) || n > NRULES)
		return -EINVAL;
	uint64_t total = 0;
	int has_default = 0;
	uint8_t seen[4096] = {0};
	for (uint32_t i = 0; i < n; i++) {
		const struct mr_tap_vlan_rule *v = &rules[i];
		if (v->vid > 4094 || seen[v->vid] || (v->flags & ~MR_TAP_RULE_WHEN_LISTENED) ||
		    v->filter_len > MR_TAP_MAX_INSNS ||
		    (v->filter_len && !v->filter))
			return -EINVAL;
		seen[v->vid] = 1;
		has_default |= v->vid == 0;
		total += v->filter_len;
	}
	if (n - has_default > MR_TAP_MAX_VLAN_RULES || total > MR_TAP_MAX_TABLE_INSNS)
		return -EINVAL;
	struct rule_block *b = calloc(1, sizeof(*b) + (size_t)total * sizeof(struct bpf_insn));
	if (!b)
		return -ENOMEM;
	b->nrules = 1; /* rules[0]: the default rule, session 0 unless given */
	for (uint32_t i = 0; i < n; i++) {
		const struct mr_tap_vlan_rule *v = &rules[i];
		struct block_rule *o = v->vid ? &b->rules[b->nrules++] : &b->rules[0];
		o->vid = v->vid;
		o->flags = v->flags;
		o->r = v->rule;
		o->prog_off = b->nprog;
		o->nprog = v->filter_len;
		if (v->filter_len)
			memcpy(&b->prog[b->nprog], v->filter, (size_t)v->filter_len * sizeof(struct bpf_insn));
		/* libpcap's checks (jumps in range, no division by a zero constant, ends in a
		 * return): what bpf_filter() assumes of a program */
		if (v->filter_len && !bpf_validate(&b->prog[b->nprog], (int)v->filter_len)) {
			free(b);
			return -EINVAL;
		}
		b->nprog += v->filter_len;
	}
	/* seq_cst: the new table's bytes before its pointer (release; pairs with the seq_cst
	 * load of rule in take_rule()), and the first half of the Dekker pair above; acquire:
	 * the old table, an earlier call's, is ours to free */
	struct rule_block *old = atomic_exchange_explicit(&t->rule, b, memory_order_seq_cst);
	/* release: the swap above before the generation that announces it; pairs with the
	 * acquire load of gen in take_rule(): a packet thread that reads generation g then
	 * loads rule and gets b (or a newer table), never `old` */
	atomic_fetch_add_explicit(&t->gen, 1, memory_order_release);
	/* grace period.  seq_cst: the second half of the Dekker pair; a 0 read here pairs
	 * with the release store of reading = 0 in take_rule(), which follows that thread's
	 * last read of `old` */
	for (int spins = 0; atomic_load_explicit(&t->reading, memory_order_seq_cst) && spins < 20000; spins++)
		usleep(50);
	/* a packet thread stalled for over a second inside the copy may still be about to read
	 * `old`: leak it rather than risk a use-after-free on the packet path */
	if (atomic_load_explicit(&t->reading, memory_order_seq_cst))
		return 0;
	free(old);
	return 0;
}

/* Packet thread, after copying a table: give each rule with a session its slot.  A rule
 * whose (vid, session) was in the previous table keeps that slot (its k, run length and
 * counters go on); a slot no rule claims is freed; a new pair gets a free slot, reset.
 * The reset is a seqlock's write side: key 0 (the odd sequence), the counters, then the
 * new key with release (pairs with the acquire load of key in mr_tap__rule_counters). */
static void adopt_slots(struct mr_tap *t)
{
	uint8_t kept[NRULES] = {0};
	for (uint32_t i = 0; i < t->nrules; i++) {
		struct local_rule *l = &t->rules[i];
		l->s = NULL;
		if (!l->r.session_id)
			continue;
		uint64_t id = KEY_ID(l->vid, l->r.session_id);
		for (uint32_t j = 0; j < NRULES; j++) {
			/* relaxed: the packet thread is the only writer of key */
			if (!kept[j] && (atomic_load_explicit(&t->slots[j].key, memory_order_relaxed) & KEY_ID_MASK) == id) {
				l->s = &t->slots[j];
				kept[j] = 1;
				break;
			}
		}
	}
	for (uint32_t j = 0; j < NRULES; j++)
		if (!kept[j])
			atomic_store_explicit(&t->slots[j].key, 0, memory_order_relaxed);
	/* release: key 0 before the counters are reset below (a reader that saw the old key
	 * and then reads a reset counter sees key change when it checks again) */
	atomic_thread_fence(memory_order_release);
	for (uint32_t i = 0; i < t->nrules; i++) {
		struct local_rule *l = &t->rules[i];
		if (!l->r.session_id || l->s)
			continue;
		uint32_t j = 0;
		while (kept[j]) /* a free slot: at most NRULES rules, so there is one */
			j++;
		kept[j] = 1;
		struct rule_slot *s = &t->slots[j];
		s->k = 0;
		s->run_left = 0;
		s->uses++;
		atomic_store_explicit(&s->seen, 0, memory_order_relaxed);
		atomic_store_explicit(&s->filtered, 0, memory_order_relaxed);
		atomic_store_explicit(&s->sampled, 0, memory_order_relaxed);
		atomic_store_explicit(&s->pushed, 0, memory_order_relaxed);
		atomic_store_explicit(&s->dropped_ring_full, 0, memory_order_relaxed);
		atomic_store_explicit(&s->dropped_no_ring, 0, memory_order_relaxed);
		atomic_store_explicit(&s->dropped_ring_lost, 0, memory_order_relaxed);
		atomic_store_explicit(&s->skipped_no_listener, 0, memory_order_relaxed);
		/* release: the reset counters before the key that names them; pairs with the
		 * acquire load of key in mr_tap__rule_counters() */
		atomic_store_explicit(&s->key, KEY(s->uses & 0x7ffff, l->vid, l->r.session_id), memory_order_release);
		l->s = s;
	}
	memset(t->by_vid, 0, sizeof(t->by_vid));
	for (uint32_t i = 1; i < t->nrules; i++)
		t->by_vid[t->rules[i].vid] = (uint8_t)i;
}

/* Packet thread, once per burst: take up a table set since the last burst.  The common
 * case is one acquire load (a plain load on x86) of a line nobody writes. */
static inline void take_rule(struct mr_tap *t)
{
	/* acquire: pairs with the release fetch-add of gen in mr_tap__set_rules(); the table
	 * swapped in before generation g is then the one (or older than the one) the load of
	 * rule below returns */
	uint64_t g = atomic_load_explicit(&t->gen, memory_order_acquire);
	if (g == t->local_gen)
		return;
	/* seq_cst: the first half of the reader's side of the Dekker pair (see set_rules) */
	atomic_store_explicit(&t->reading, 1, memory_order_seq_cst);
	/* seq_cst (acquire at least): the table's bytes; pairs with the exchange of rule in
	 * mr_tap__set_rules() */
	struct rule_block *p = atomic_load_explicit(&t->rule, memory_order_seq_cst);
	if (p) {
		t->nrules = p->nrules;
		for (uint32_t i = 0; i < p->nrules; i++)
			t->rules[i] = (struct local_rule){.r = p->rules[i].r, .vid = p->rules[i].vid,
							  .flags = p->rules[i].flags,
							  .prog_off = p->rules[i].prog_off, .nprog = p->rules[i].nprog};
		memcpy(t->prog, p->prog, (size_t)p->nprog * sizeof(struct bpf_insn));
	}
	/* release: our copy of *p is done before we say so; pairs with the seq_cst loads of
	 * reading in mr_tap__set_rules(), after which it frees the old table */
	atomic_store_explicit(&t->reading, 0, memory_order_release);
	if (p)
		adopt_slots(t);
	t->local_gen = g;
	atomic_store_explicit(&t->c.rule_generation, g, memory_order_relaxed);
}

static inline int sample(struct rule_slot *s, const struct mr_tap_rule *rule)
{
	if (s->run_left) {
		s->run_left--;
		s->k++;
		return 1;
	}
	int hit = rule->rate <= 1 || s->k % rule->rate == 0;
	s->k++;
	if (hit)
		s->run_left = rule->run_length;
	return hit;
}

/* The outer VLAN ID of a frame: its first tag's (802.1Q 0x8100, or 802.1ad 0x88a8, the
 * S-tag of QinQ), 0 for an untagged frame or one too short to hold a tag. */
static inline uint32_t outer_vid(const struct mr_tap_frame *f)
{
	if (!f->nfrags || f->frags[0].len < 16)
		return 0;
	const uint8_t *d = f->frags[0].data;
	uint32_t tpid = (uint32_t)d[12] << 8 | d[13];
	if (tpid != 0x8100 && tpid != 0x88a8)
		return 0;
	return ((uint32_t)d[14] & 0x0f) << 8 | d[15];
}

/* one rule's counts in one burst, folded into its slot and the tap's totals at the end */
struct burst_acc {
	uint64_t seen, filtered, sampled, pushed, rfull, noring, lost, skipped;
	int quiet; /* -1: not asked yet; 1: a when_listened rule nobody listens to (this burst) */
};

/* A rule's counter, added once per burst.  release: written in the order seen, filtered,
 * sampled, then pushed and the drops, and read back to front with acquire loads
 * (mr_tap__rule_counters): any snapshot of one rule then has
 * pushed + dropped_* <= sampled <= seen - filtered, as the live counters always do. */
#define SADD(s, field, n)                                                                        \
	atomic_store_explicit(&(s)->field,                                                       \
			      atomic_load_explicit(&(s)->field, memory_order_relaxed) + (n),     \
			      memory_order_release)

MR_EXPORT unsigned mr_tap__offer_burst(struct mr_tap *t, const struct mr_tap_frame *frames, unsigned n,
				       uint32_t ifindex, uint64_t ts_ns)
{
	take_rule(t);
	if (!n)
		return 0;
	CADD(t, seen, n);
	const uint32_t nrules = t->nrules;
	if (nrules == 1 && !t->rules[0].r.session_id)
		return 0; /* nothing to mirror, no VID to look at */

	struct burst_acc acc[NRULES];
	memset(acc, 0, nrules * sizeof(acc[0]));
	for (uint32_t i = 0; i < nrules; i++)
		acc[i].quiet = -1;
	/* a ring whose file was truncated: once per burst (see mr_prod__lost) */
	int ring_lost = t->has_ring && mr_prod__lost(&t->ring);
	for (unsigned p = 0; p < n; p++) {
		const struct mr_tap_frame *f = &frames[p];
		/* VLAN dispatch: the sub-interface's rule first, then the parent's */
		uint32_t ri = nrules == 1 ? 0 : t->by_vid[outer_vid(f)];
		const struct local_rule *l = &t->rules[ri];
		if (!l->s)
			continue; /* no session for this frame (and no fallback: see tap.h) */
		struct burst_acc *a = &acc[ri];
		a->seen++;
		uint64_t wire = 0;
		for (uint32_t i = 0; i < f->nfrags; i++)
			wire += f->frags[i].len;
		if (wire > UINT32_MAX)
			wire = UINT32_MAX;
		if (l->nprog) {
			/* one buffer for bpf_filter: the first fragment, or a multi-buffer frame
			 * gathered (up to MR_FRAME_MAX bytes); wirelen: the whole frame's length
			 * (what `greater`, `len` see) */
			const uint8_t *d = f->nfrags ? f->frags[0].data : (const uint8_t *)"";
			uint32_t buf = f->nfrags ? f->frags[0].len : 0;
			if (f->nfrags > 1) {
				uint32_t room = sizeof(t->linear);
				buf = 0;
				for (uint32_t i = 0; i < f->nfrags && buf < room; i++) {
					uint32_t c = f->frags[i].len < room - buf ? f->frags[i].len : room - buf;
					memcpy(t->linear + buf, f->frags[i].data, c);
					buf += c;
				}
				d = t->linear;
			}
			if (!bpf_filter(&t->prog[l->prog_off], d, (u_int)wire, buf)) {
				a->filtered++;
				continue;
			}
		}
		if (!sample(l->s, &l->r))
			continue;
		a->sampled++;
		if (!t->has_ring) {
			a->noring++;
			continue;
		}
		if (ring_lost) {
			a->lost++;
			continue;
		}
		if (l->flags & MR_TAP_RULE_WHEN_LISTENED) {
			/* once per rule and burst: one line of the ring header, written by the
			 * consumer when a listener comes or goes; no lock, no wait */
			if (a->quiet < 0)
				a->quiet = !mr_prod__listened(&t->ring, l->r.session_id);
			if (a->quiet) {
				a->skipped++;
				continue;
			}
		}
		uint32_t len = (uint32_t)wire;
		uint32_t cap = l->r.max_len && l->r.max_len < len ? l->r.max_len : len;
		struct mr_rec *r = mr_prod__reserve(&t->ring, cap, len);
		if (!r) {
			a->rfull++;
			continue;
		}
		r->ifindex = ifindex;
		r->session_id = l->r.session_id;
		r->ts_ns = ts_ns;
		/* the fragments gathered into one record, cut to the length we computed (never
		 * one read back from the shared record) */
		uint32_t left = cap < t->ring.max_frame ? cap : t->ring.max_frame;
		uint8_t *dst = mr_rec__data(r);
		for (uint32_t i = 0; i < f->nfrags && left; i++) {
			uint32_t c = f->frags[i].len < left ? f->frags[i].len : left;
			memcpy(dst, f->frags[i].data, c);
			dst += c;
			left -= c;
		}
		a->pushed++;
	}
	struct burst_acc sum = {0};
	for (uint32_t i = 0; i < nrules; i++)
		sum.pushed += acc[i].pushed, sum.rfull += acc[i].rfull;
	if (sum.pushed)
		mr_prod__submit(&t->ring);
	/* lost during this burst: its copies went to the zero pages that replaced the mapping
	 * (or met their stale indices as "full"); all of them count as lost */
	int lost_now = (sum.pushed || sum.rfull) && mr_prod__lost(&t->ring);
	sum = (struct burst_acc){0};
	for (uint32_t i = 0; i < nrules; i++) {
		struct burst_acc *a = &acc[i];
		struct rule_slot *s = t->rules[i].s;
		if (!s)
			continue;
		if (lost_now) {
			a->lost += a->pushed + a->rfull;
			a->pushed = a->rfull = 0;
		}
		SADD(s, seen, a->seen);
		SADD(s, filtered, a->filtered);
		SADD(s, sampled, a->sampled);
		SADD(s, pushed, a->pushed);
		SADD(s, dropped_ring_full, a->rfull);
		SADD(s, dropped_no_ring, a->noring);
		SADD(s, dropped_ring_lost, a->lost);
		SADD(s, skipped_no_listener, a->skipped);
		sum.skipped += a->skipped;
		sum.filtered += a->filtered, sum.sampled += a->sampled, sum.pushed += a->pushed;
		sum.rfull += a->rfull, sum.noring += a->noring, sum.lost += a->lost;
	}
	atomic_store_explicit(&t->filtered, atomic_load_explicit(&t->filtered, memory_order_relaxed) + sum.filtered,
			      memory_order_relaxed);
	atomic_store_explicit(&t->skipped, atomic_load_explicit(&t->skipped, memory_order_relaxed) + sum.skipped,
			      memory_order_relaxed);
	CADD(t, sampled, sum.sampled);
	CADD(t, pushed, sum.pushed);
	CADD(t, dropped_ring_full, sum.rfull);
	CADD(t, dropped_no_ring, sum.noring);
	CADD(t, dropped_ring_lost, sum.lost);
	return (unsigned)sum.pushed;
}

MR_EXPORT unsigned mr_tap__offer(struct mr_tap *t, const void *const *data, const uint32_t *len, unsigned n,
				 uint32_t ifindex, uint64_t ts_ns)
{
	/* in slices, on the stack: no allocation, whatever n */
	enum { SLICE = 64 };
	struct mr_tap_frag frag[SLICE];
	struct mr_tap_frame fr[SLICE];
	unsigned pushed = 0;
	if (!n)
		return mr_tap__offer_burst(t, NULL, 0, ifindex, ts_ns);
	for (unsigned off = 0; off < n; off += SLICE) {
		unsigned m = n - off < SLICE ? n - off : SLICE;
		for (unsigned i = 0; i < m; i++) {
			frag[i] = (struct mr_tap_frag){.data = data[off + i], .len = len[off + i]};
			fr[i] = (struct mr_tap_frame){.frags = &frag[i], .nfrags = 1};
		}
		pushed += mr_tap__offer_burst(t, fr, m, ifindex, ts_ns);
	}
	return pushed;
}

MR_EXPORT int mr_tap__rule_counters(const struct mr_tap *t, struct mr_tap_rule_counters *out, uint32_t max)
{
	uint32_t n = 0;
	for (uint32_t j = 0; j < NRULES; j++) {
		struct rule_slot *s = (struct rule_slot *)&t->slots[j];
		for (int tries = 0; tries < 4; tries++) {
			/* the read side of the seqlock in adopt_slots().  acquire: pairs with the
			 * release store of key after a reset */
			uint64_t k1 = atomic_load_explicit(&s->key, memory_order_acquire);
			if (!k1)
				break;
			/* back to front, acquire: pairs with the release stores of SADD (the
			 * drops and pushed of a burst are never seen before its sampled) */
			struct mr_tap_rule_counters c = {.vid = (uint32_t)(k1 >> 32) & 0xfff, .session_id = (uint32_t)k1};
			c.skipped_no_listener = atomic_load_explicit(&s->skipped_no_listener, memory_order_acquire);
			c.dropped_ring_lost = atomic_load_explicit(&s->dropped_ring_lost, memory_order_acquire);
			c.dropped_no_ring = atomic_load_explicit(&s->dropped_no_ring, memory_order_acquire);
			c.dropped_ring_full = atomic_load_explicit(&s->dropped_ring_full, memory_order_acquire);
			c.pushed = atomic_load_explicit(&s->pushed, memory_order_acquire);
			c.sampled = atomic_load_explicit(&s->sampled, memory_order_acquire);
			c.filtered = atomic_load_explicit(&s->filtered, memory_order_acquire);
			c.seen = atomic_load_explicit(&s->seen, memory_order_acquire);
			/* acquire: the counters read above before the key is read again; pairs with
			 * the release fence in adopt_slots() */
			atomic_thread_fence(memory_order_acquire);
			if (atomic_load_explicit(&s->key, memory_order_relaxed) != k1)
				continue; /* given to another pair meanwhile: read it again */
			if (n < max && out)
				out[n] = c;
			n++;
			break;
		}
	}
	return (int)n;
}

MR_EXPORT void mr_tap__counters(const struct mr_tap *t, struct mr_tap_counters *o)
{
	/* relaxed: statistics; pairs with nothing (each is a single-writer counter) */
	o->seen = atomic_load_explicit(&t->c.seen, memory_order_relaxed);
	o->sampled = atomic_load_explicit(&t->c.sampled, memory_order_relaxed);
	o->pushed = atomic_load_explicit(&t->c.pushed, memory_order_relaxed);
	o->dropped_ring_full = atomic_load_explicit(&t->c.dropped_ring_full, memory_order_relaxed);
	o->dropped_no_ring = atomic_load_explicit(&t->c.dropped_no_ring, memory_order_relaxed);
	o->dropped_ring_lost = atomic_load_explicit(&t->c.dropped_ring_lost, memory_order_relaxed);
	o->rule_generation = atomic_load_explicit(&t->c.rule_generation, memory_order_relaxed);
}

MR_EXPORT uint64_t mr_tap__filtered(const struct mr_tap *t)
{
	/* relaxed: a single-writer statistic, as mr_tap__counters */
	return atomic_load_explicit(&t->filtered, memory_order_relaxed);
}

MR_EXPORT uint64_t mr_tap__skipped_no_listener(const struct mr_tap *t)
{
	/* relaxed: a single-writer statistic, as mr_tap__counters */
	return atomic_load_explicit(&t->skipped, memory_order_relaxed);
}

MR_EXPORT int mr_tap__ring_fds(const struct mr_tap *t, int *ring_fd, int *eventfd)
{
	if (!t->has_ring)
		return -ENOENT;
	*ring_fd = t->ring.fd;
	*eventfd = t->ring.efd;
	return 0;
}

MR_EXPORT const char *mr_tap__ring_path(const struct mr_tap *t)
{
	return t->has_ring && t->ring.path[0] ? t->ring.path : NULL;
}

MR_EXPORT int mr_tap__ring_lost(const struct mr_tap *t, char *reason, size_t len)
{
	if (!t->has_ring)
		return -ENOENT;
	mr_prod__lost_reason(&t->ring, reason, len);
	return mr_prod__lost(&t->ring);
}
