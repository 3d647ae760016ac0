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

/* A rule as set_rule allocates it: the rule and its filter in one block, swapped whole */
struct rule_block {
	struct mr_tap_rule r;
	uint32_t nprog;
	struct bpf_insn prog[];
};

struct mr_tap {
	/* the packet thread's own state, first: what every burst touches */
	struct mr_tap_rule local;    /* its copy of the current rule */
	uint32_t nprog;              /* its copy of the rule's filter: 0, none */
	_Atomic uint64_t filtered;   /* frames its filter rejected (packet thread writes) */
	uint64_t local_gen;          /* the generation it copied */
	uint64_t k;                  /* sampling counter: frames seen while a session is set */
	uint32_t run_left;
	int has_ring;
	struct mr_prod ring;
	struct tap_counters c;
	/* shared with mr_tap__set_rule (any thread), each on its own line */
	_Alignas(MR_CACHELINE) _Atomic(struct rule_block *) rule;
	_Atomic uint64_t gen;        /* bumped by mr_tap__set_rule after swapping rule */
	_Alignas(MR_CACHELINE) _Atomic int reading; /* 1 while the packet thread copies *rule */
	struct bpf_insn prog[MR_TAP_MAX_INSNS]; /* the packet thread's copy of the filter */
};

static int tap_new(struct mr_tap **out)
{
	struct mr_tap *t = aligned_alloc(MR_CACHELINE, (sizeof(*t) + MR_CACHELINE - 1) & ~(size_t)(MR_CACHELINE - 1));
	if (!t)
		return -ENOMEM;
	memset(t, 0, sizeof(*t));
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
 * The rule swap, RCU style with the shortest possible read side.  The packet thread reads
 * a rule only to copy it (16 bytes), and only when the generation changed; around that
 * copy it raises `reading`.  The writer publishes the new rule, bumps the generation, and
 * waits until it sees `reading` down once: after that no copy of the old rule can start
 * (the seq_cst store of reading = 1 and the load of rule that follows it, against the
 * writer's seq_cst exchange of rule and load of reading, form a Dekker pair: either the
 * packet thread's load of rule sees the new rule, or the writer sees reading == 1 and
 * waits for the release store of reading = 0 that ends the copy).  No packet thread that
 * is merely idle holds up a writer, and several writers may swap at once: each frees the
 * rule its own exchange took out.
 */
MR_EXPORT int mr_tap__set_rule(struct mr_tap *t, const struct mr_tap_rule *r)
{
	return mr_tap__set_rule_filter(t, r, NULL, 0);
}

MR_EXPORT int mr_tap__set_rule_filter(struct mr_tap *t, const struct mr_tap_rule *r, const struct mr_tap_insn *insns,
				      uint32_t ninsns)
{
	if (!t || !r || ninsns > MR_TAP_MAX_INSNS || (ninsns && !insns))
		return -EINVAL;
	if (!insns)
		ninsns = 0;
	struct rule_block *n = malloc(sizeof(*n) + (size_t)ninsns * sizeof(struct bpf_insn));
	if (!n)
		return -ENOMEM;
	n->r = *r;
	n->nprog = ninsns;
	if (ninsns)
		memcpy(n->prog, insns, (size_t)ninsns * sizeof(struct bpf_insn));
	/* libpcap's checks (jumps in range, no division by a zero constant, ends in a return):
	 * what bpf_filter() assumes of a program */
	if (ninsns && !bpf_validate(n->prog, (int)ninsns)) {
		free(n);
		return -EINVAL;
	}
	/* seq_cst: the new rule's bytes before its pointer (release; pairs with the seq_cst
	 * load of rule in take_rule()), and the first half of the Dekker pair above; acquire:
	 * the old rule, an earlier call's, is ours to free */
	struct rule_block *old = atomic_exchange_explicit(&t->rule, n, memory_order_seq_cst);
	/* release: the swap above before the generation that announces it; pairs with the
	 * acquire load of gen in take_rule(): a packet thread that reads generation g then
	 * loads rule and gets n (or a newer rule), never `old` */
	atomic_fetch_add_explicit(&t->gen, 1, memory_order_release);
	/* grace period.  seq_cst: the second half of the Dekker pair; a 0 read here pairs
	 * with the release store of reading = 0 in take_rule(), which follows that thread's
	 * last read of `old` */
	for (int spins = 0; atomic_load_explicit(&t->reading, memory_order_seq_cst) && spins < 20000; spins++)
		usleep(50);
	/* a packet thread stalled for over a second inside a 16-byte copy may still be about
	 * to read `old`: leak these few bytes rather than risk a use-after-free on the packet
	 * path */
	if (atomic_load_explicit(&t->reading, memory_order_seq_cst))
		return 0;
	free(old);
	return 0;
}

/* Packet thread, once per burst: take up a rule set since the last burst.  The common
 * case is one acquire load (a plain load on x86) of a line nobody writes. */
static inline void take_rule(struct mr_tap *t)
{
	/* acquire: pairs with the release fetch-add of gen in mr_tap__set_rule(); the rule
	 * swapped in before generation g is then the one (or older than the one) the load of
	 * rule below returns */
	uint64_t g = atomic_load_explicit(&t->gen, memory_order_acquire);
	if (g == t->local_gen)
		return;
	/* seq_cst: the first half of the reader's side of the Dekker pair (see set_rule) */
	atomic_store_explicit(&t->reading, 1, memory_order_seq_cst);
	/* seq_cst (acquire at least): the rule's bytes; pairs with the exchange of rule in
	 * mr_tap__set_rule() */
	struct rule_block *p = atomic_load_explicit(&t->rule, memory_order_seq_cst);
	if (p) {
		t->local = p->r;
		t->nprog = p->nprog;
		memcpy(t->prog, p->prog, (size_t)p->nprog * sizeof(struct bpf_insn));
	}
	/* release: our copy of *p is done before we say so; pairs with the seq_cst loads of
	 * reading in mr_tap__set_rule(), after which it frees the old rule */
	atomic_store_explicit(&t->reading, 0, memory_order_release);
	t->local_gen = g;
	atomic_store_explicit(&t->c.rule_generation, g, memory_order_relaxed);
}

static inline int sample(struct mr_tap *t, const struct mr_tap_rule *rule)
{
	if (t->run_left) {
		t->run_left--;
		t->k++;
		return 1;
	}
	int hit = rule->rate <= 1 || t->k % rule->rate == 0;
	t->k++;
	if (hit)
		t->run_left = rule->run_length;
	return hit;
}

MR_EXPORT unsigned mr_tap__offer_burst(struct mr_tap *t, const struct mr_tap_frame *frames, unsigned n,
				       uint32_t ifindex, uint64_t ts_ns)
{
	take_rule(t);
	if (!n)
		return 0;
	CADD(t, seen, n);
	const struct mr_tap_rule *rule = &t->local;
	if (!rule->session_id)
		return 0;

	uint64_t sampled = 0, pushed = 0, rfull = 0, noring = 0, lost = 0, filtered = 0;
	/* a ring whose file was truncated: once per burst (see mr_prod__lost) */
	int ring_lost = t->has_ring && mr_prod__lost(&t->ring);
	for (unsigned p = 0; p < n; p++) {
		if (t->nprog) {
			/* the first fragment holds the headers; wirelen: the whole frame's length
			 * (what `greater`, `len` and loads past the first fragment see) */
			const struct mr_tap_frame *f = &frames[p];
			uint64_t wire = 0;
			for (uint32_t i = 0; i < f->nfrags; i++)
				wire += f->frags[i].len;
			const uint8_t *d = f->nfrags ? f->frags[0].data : (const uint8_t *)"";
			uint32_t buf = f->nfrags ? f->frags[0].len : 0;
			if (!bpf_filter(t->prog, d, wire > UINT32_MAX ? UINT32_MAX : (u_int)wire, buf)) {
				filtered++;
				continue;
			}
		}
		if (!sample(t, rule))
			continue;
		sampled++;
		if (!t->has_ring) {
			noring++;
			continue;
		}
		if (ring_lost) {
			lost++;
			continue;
		}
		const struct mr_tap_frame *f = &frames[p];
		uint64_t wire = 0;
		for (uint32_t i = 0; i < f->nfrags; i++)
			wire += f->frags[i].len;
		if (wire > UINT32_MAX)
			wire = UINT32_MAX;
		uint32_t len = (uint32_t)wire;
		uint32_t cap = rule->max_len && rule->max_len < len ? rule->max_len : len;
		struct mr_rec *r = mr_prod__reserve(&t->ring, cap, len);
		if (!r) {
			rfull++;
			continue;
		}
		r->ifindex = ifindex;
		r->session_id = rule->session_id;
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
		pushed++;
	}
	if (pushed)
		mr_prod__submit(&t->ring);
	if ((pushed || rfull) && mr_prod__lost(&t->ring)) {
		/* lost during this burst: its copies went to the zero pages that replaced the
		 * mapping (or met their stale indices as "full"); all of them count as lost */
		lost += pushed + rfull;
		pushed = rfull = 0;
	}
	atomic_store_explicit(&t->filtered, atomic_load_explicit(&t->filtered, memory_order_relaxed) + filtered,
			      memory_order_relaxed);
	CADD(t, sampled, sampled);
	CADD(t, pushed, pushed);
	CADD(t, dropped_ring_full, rfull);
	CADD(t, dropped_no_ring, noring);
	CADD(t, dropped_ring_lost, lost);
	return (unsigned)pushed;
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
