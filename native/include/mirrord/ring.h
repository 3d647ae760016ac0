/* SPDX-License-Identifier: MIT */
/*
 * mirrord mirror ring: a single-producer / single-consumer ring of variable-length
 * records in shared memory.  The byte layout and the ordering rules are ABI and are
 * described in docs/ring-abi.md; the _Static_asserts below pin the offsets.
 *
 * Conventions (after libxdp's xsk.h and DPDK's rte_ring):
 *  - free-running 64-bit byte indices, masked on access; fill level = prod - cons;
 *  - each side keeps a private copy of its own index (authoritative) and a cached copy
 *    of the other side's, and rereads the shared one only when the ring looks full/empty;
 *  - two-phase batches: reserve/submit (producer), next/release (consumer);
 *  - neither side trusts what it reads from shared memory: the producer treats an
 *    impossible consumer index as "full", the consumer validates every record and
 *    resets the ring on anything impossible.
 *
 * This header is the ring and nothing else: what another producer or consumer needs.
 * Delivery of records to outputs (routes, drain modes, drain stats) is in mirrord/drain.h,
 * the SIGBUS guard for mappings someone else can shrink in mirrord/guard.h.
 */
#ifndef MIRRORD_RING_H
#define MIRRORD_RING_H

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define MR_RING_MAGIC 0x31474e495252524dULL /* "MRRRING1" in memory order */
#define MR_RING_ABI_VERSION 1
#define MR_RING_HDR_SIZE 4096u      /* data area starts here (page aligned) */
#define MR_REC_HDR_SIZE 40u         /* sizeof(struct mr_rec) */
#define MR_REC_ALIGN 8u
#define MR_RING_MIN_DATA (64u * 1024)
#define MR_RING_MAX_DATA (1u << 30)
#define MR_RING_DEFAULT_DATA (4u * 1024 * 1024)
#define MR_FRAME_MAX 65535u         /* largest max_frame a ring may declare */
#define MR_FRAME_DEFAULT 9216u      /* jumbo */

/* record flags */
#define MR_REC_F_PAD 0x0001u        /* filler up to the end of the data area; no payload */
#define MR_REC_F_TRUNCATED 0x0002u  /* cap_len < wire_len */
#define MR_REC_F_KNOWN (MR_REC_F_PAD | MR_REC_F_TRUNCATED)

#define MR_CACHELINE 64
#define MR_LISTENED_MAX 14u      /* session ids in the header's listened set (line 6) */
#define MR_LISTENED_ALL 0xffffffffu /* listened_n: every session counts as listened */
#define MR_REPUBLISH_DROPS 1024u /* a full ring republishes prod once per this many drops */

/* The shared header: 4096 bytes, the data area follows at MR_RING_HDR_SIZE. */
struct mr_ring_hdr {
	/* line 0: written once by the creator before the ring is published, then read-only */
	uint64_t magic;             /*  0 */
	uint32_t abi_version;       /*  8 */
	uint32_t hdr_size;          /* 12 */
	uint32_t data_size;         /* 16 power of two */
	uint32_t max_frame;         /* 20 largest cap_len the producer writes */
	uint32_t rec_hdr_size;      /* 24 */
	uint32_t producer_pid;      /* 28 */
	int32_t producer_eventfd;   /* 32 fd number of the eventfd in the producer process */
	uint32_t reserved0;         /* 36 */
	uint64_t created_ns;        /* 40 CLOCK_REALTIME */
	char name[16];              /* 48 NUL-padded label, e.g. "eth1:q0" */

	/* line 1: written by the producer only */
	_Alignas(MR_CACHELINE) _Atomic uint64_t prod; /* 64 */

	/* line 2: written by the consumer only */
	_Alignas(MR_CACHELINE) _Atomic uint64_t cons; /* 128 */

	/* line 3: the wake-up flag; set by the consumer, cleared by whoever wakes it */
	_Alignas(MR_CACHELINE) _Atomic uint32_t need_wakeup; /* 192 */

	/* line 4: producer counters (the producer's private totals, published at submit) */
	_Alignas(MR_CACHELINE) _Atomic uint64_t pushed_pkts; /* 256 */
	_Atomic uint64_t pushed_bytes;          /* 264 */
	_Atomic uint64_t drop_full_pkts;        /* 272 */
	_Atomic uint64_t drop_full_bytes;       /* 280 */
	_Atomic uint64_t truncated_pkts;        /* 288 */
	_Atomic uint64_t wakeups;               /* 296 eventfd writes */

	/* line 5: consumer counters (survive a consumer restart) */
	_Alignas(MR_CACHELINE) _Atomic uint64_t consumed_pkts; /* 320 */
	_Atomic uint64_t consumed_bytes;        /* 328 */
	_Atomic uint64_t corrupt_events;        /* 336 */
	_Atomic uint64_t corrupt_bytes;         /* 344 bytes skipped by resets */
	_Atomic uint64_t attaches;              /* 352 consumer attach count */

	/* line 6: written by the consumer: the sessions whose output someone listens to, for
	 * producers that copy a when_listened session's frames only then (a seqlock: seq is
	 * odd while the consumer writes; zeros, as created, mean "nobody listens") */
	_Alignas(MR_CACHELINE) _Atomic uint32_t listened_seq; /* 384 */
	_Atomic uint32_t listened_n;            /* 388 ids in listened[], or MR_LISTENED_ALL */
	_Atomic uint32_t listened[MR_LISTENED_MAX]; /* 392 session ids */
};

_Static_assert(offsetof(struct mr_ring_hdr, max_frame) == 20, "ABI");
_Static_assert(offsetof(struct mr_ring_hdr, producer_eventfd) == 32, "ABI");
_Static_assert(offsetof(struct mr_ring_hdr, name) == 48, "ABI");
_Static_assert(offsetof(struct mr_ring_hdr, prod) == 64, "ABI");
_Static_assert(offsetof(struct mr_ring_hdr, cons) == 128, "ABI");
_Static_assert(offsetof(struct mr_ring_hdr, need_wakeup) == 192, "ABI");
_Static_assert(offsetof(struct mr_ring_hdr, pushed_pkts) == 256, "ABI");
_Static_assert(offsetof(struct mr_ring_hdr, consumed_pkts) == 320, "ABI");
_Static_assert(offsetof(struct mr_ring_hdr, attaches) == 352, "ABI");
_Static_assert(offsetof(struct mr_ring_hdr, listened_seq) == 384, "ABI");
_Static_assert(offsetof(struct mr_ring_hdr, listened) == 392, "ABI");
_Static_assert(sizeof(struct mr_ring_hdr) == 448, "ABI");
_Static_assert(sizeof(struct mr_ring_hdr) <= MR_RING_HDR_SIZE, "ABI");
_Static_assert(sizeof(_Atomic uint64_t) == 8, "ABI");

/* A record: header, then cap_len bytes of frame, then padding to MR_REC_ALIGN. */
struct mr_rec {
	uint32_t size;       /*  0 whole record incl. header and padding; multiple of 8 */
	uint16_t flags;      /*  4 MR_REC_F_* */
	uint16_t reserved;   /*  6 zero */
	uint32_t cap_len;    /*  8 bytes of frame in the record */
	uint32_t wire_len;   /* 12 length of the original frame */
	uint32_t ifindex;    /* 16 ingress interface */
	uint32_t session_id; /* 20 mirror session */
	uint64_t seq;        /* 24 per-ring sequence: index among all copies offered */
	uint64_t ts_ns;      /* 32 producer timestamp */
	/* 40: frame bytes */
};
_Static_assert(sizeof(struct mr_rec) == MR_REC_HDR_SIZE, "ABI");
_Static_assert(offsetof(struct mr_rec, seq) == 24, "ABI");

#define MR_ALIGN8(x) (((x) + (MR_REC_ALIGN - 1)) & ~(uint64_t)(MR_REC_ALIGN - 1))

/* ---------------------------------------------------------------- producer */

struct mr_prod {
	struct mr_ring_hdr *hdr;
	uint8_t *data;
	uint64_t size;        /* data_size */
	uint64_t mask;
	uint32_t max_frame;
	int efd;              /* eventfd, owned */
	int fd;               /* shm fd, owned */
	uint64_t resv;        /* private producer index: end of the last reserved record */
	uint64_t pub;         /* last value stored to hdr->prod */
	uint64_t cached_cons;
	uint64_t seq;         /* next sequence number == copies offered so far */
	/* private totals, published to the header by mr_prod__submit */
	uint64_t pushed_pkts, pushed_bytes, drop_full_pkts, drop_full_bytes, truncated_pkts;
	uint64_t wakeups;
	size_t map_len;
	int guard;            /* SIGBUS guard slot + 1 (0: none, a sealed memfd) */
	char path[256];       /* "" for a memfd ring */
};

/* 1 once the ring's file was truncated under us (the SIGBUS guard, mirrord/guard.h). */
int mr_prod__lost(const struct mr_prod *p);

/* Frame metadata the caller supplies with a copy. */
struct mr_meta {
	uint32_t wire_len;   /* 0: same as the length passed */
	uint32_t ifindex;
	uint32_t session_id;
	uint64_t ts_ns;
};

static inline void mr_prod__publish_counters(struct mr_prod *p)
{
	struct mr_ring_hdr *h = p->hdr;
	/* relaxed: statistics, read by anyone with no ordering requirement */
	atomic_store_explicit(&h->pushed_pkts, p->pushed_pkts, memory_order_relaxed);
	atomic_store_explicit(&h->pushed_bytes, p->pushed_bytes, memory_order_relaxed);
	atomic_store_explicit(&h->drop_full_pkts, p->drop_full_pkts, memory_order_relaxed);
	atomic_store_explicit(&h->drop_full_bytes, p->drop_full_bytes, memory_order_relaxed);
	atomic_store_explicit(&h->truncated_pkts, p->truncated_pkts, memory_order_relaxed);
	atomic_store_explicit(&h->wakeups, p->wakeups, memory_order_relaxed);
}

/*
 * Wake the consumer if, and only if, it said it is going to sleep.  Call right after a
 * seq_cst store of hdr->prod.  That store and the seq_cst load of need_wakeup below, with
 * the consumer's seq_cst store of need_wakeup and load of prod in mr_cons__prepare_sleep(),
 * form a Dekker pair: at least one side sees the other's store, so no wake-up is lost.
 * (seq_cst accesses rather than fences: same code on x86, and ThreadSanitizer models them.)
 */
static inline void mr_prod__kick(struct mr_prod *p)
{
	if (atomic_load_explicit(&p->hdr->need_wakeup, memory_order_seq_cst) &&
	    atomic_exchange_explicit(&p->hdr->need_wakeup, 0, memory_order_relaxed)) {
		uint64_t one = 1;
		/* non-blocking eventfd; EAGAIN means the counter is already huge: awake anyway */
		if (write(p->efd, &one, sizeof(one)) == sizeof(one))
			atomic_store_explicit(&p->hdr->wakeups, ++p->wakeups, memory_order_relaxed);
	}
}

/*
 * Reserve room for a copy of cap_len bytes (clamped to max_frame, which sets the
 * TRUNCATED flag).  Returns the record with size/flags/cap_len/wire_len/seq filled in;
 * the caller fills ifindex, session_id, ts_ns and copies min(cap_len, max_frame) frame
 * bytes to mr_rec__data(rec) -- a length it computed itself, never one read back from the
 * shared record -- then calls mr_prod__submit() (once per batch).
 * Returns NULL when the copy does not fit: it is dropped and counted as ring_full.
 * Never blocks, never waits for the consumer.
 */
static inline struct mr_rec *mr_prod__reserve(struct mr_prod *p, uint32_t cap_len, uint32_t wire_len)
{
	uint16_t flags = 0;
	if (wire_len < cap_len)
		wire_len = cap_len;
	if (cap_len > p->max_frame)
		cap_len = p->max_frame;
	if (cap_len < wire_len)
		flags = MR_REC_F_TRUNCATED;

	uint64_t stride = MR_ALIGN8((uint64_t)MR_REC_HDR_SIZE + cap_len);
	uint64_t off = p->resv & p->mask;
	uint64_t room = p->size - off; /* contiguous bytes up to the end of the data area */
	uint64_t need = stride <= room ? stride : room + stride;
	uint64_t seq = p->seq++;

	if (need > p->size - (p->resv - p->cached_cons)) {
		/* acquire: the consumer is done reading what it released;
		 * pairs with the release store in mr_cons__release() */
		p->cached_cons = atomic_load_explicit(&p->hdr->cons, memory_order_acquire);
		uint64_t used = p->resv - p->cached_cons;
		if (used > p->size || need > p->size - used) {
			/* Dropped.  Cheap on purpose: this is the path taken while the consumer
			 * is the bottleneck.  The kick wakes a consumer that should be draining. */
			p->drop_full_pkts++;
			p->drop_full_bytes += cap_len;
			atomic_store_explicit(&p->hdr->drop_full_pkts, p->drop_full_pkts, memory_order_relaxed);
			atomic_store_explicit(&p->hdr->drop_full_bytes, p->drop_full_bytes, memory_order_relaxed);
			if (used > p->size) {
				/* An impossible consumer index is never trusted: treat it as full,
				 * reread it next time, and republish our index so a consumer that
				 * reset onto a scribbled prod resyncs. */
				p->cached_cons = p->resv - p->size;
				atomic_store_explicit(&p->hdr->prod, p->pub, memory_order_seq_cst);
				mr_prod__publish_counters(p); /* they may have been scribbled too */
			} else if ((p->drop_full_pkts & (MR_REPUBLISH_DROPS - 1)) == 0) {
				/* A ring that stays full: republish our index now and then.  A
				 * consumer that waits on a misaligned scribbled prod (it counted
				 * it once) sees the real one and drains again. */
				atomic_store_explicit(&p->hdr->prod, p->pub, memory_order_seq_cst);
			}
			mr_prod__kick(p);
			return NULL;
		}
	}
	if (stride > room) {
		struct mr_rec *pad = (struct mr_rec *)(p->data + off);
		pad->size = (uint32_t)room;
		pad->flags = MR_REC_F_PAD;
		pad->reserved = 0;
		p->resv += room;
		off = 0;
	}
	struct mr_rec *r = (struct mr_rec *)(p->data + off);
	r->size = (uint32_t)stride;
	r->flags = flags;
	r->reserved = 0;
	r->cap_len = cap_len;
	r->wire_len = wire_len;
	r->seq = seq;
	p->resv += stride;
	p->pushed_pkts++;
	p->pushed_bytes += cap_len;
	p->truncated_pkts += flags != 0;
	return r;
}

static inline uint8_t *mr_rec__data(struct mr_rec *r)
{
	return (uint8_t *)r + MR_REC_HDR_SIZE;
}

/* Publish every record reserved since the last submit; wake the consumer if asleep. */
static inline void mr_prod__submit(struct mr_prod *p)
{
	if (p->resv == p->pub)
		return;
	/* release (seq_cst is stronger): record headers and bytes before the index; pairs
	 * with the acquire load of hdr->prod in mr_cons__next().  seq_cst for the wake-up
	 * protocol, see mr_prod__kick(). */
	atomic_store_explicit(&p->hdr->prod, p->resv, memory_order_seq_cst);
	p->pub = p->resv;
	mr_prod__publish_counters(p);
	mr_prod__kick(p);
}

/*
 * Does someone listen to session_id's output (line 6)?  For a producer that copies a
 * when_listened session's frames only then; once per burst, never waits.  The read side of
 * the consumer's seqlock (mr_cons__set_listened): a set being written, or rewritten while
 * we read it, answers 1 (copy: when in doubt, mirror).  The set is the consumer's to say
 * and cannot hurt us: n is bounded, an id only decides copy or skip.
 */
static inline int mr_prod__listened(const struct mr_prod *p, uint32_t session_id)
{
	const struct mr_ring_hdr *h = p->hdr;
	/* acquire: the ids written before seq turned even; pairs with the release store of
	 * the even seq in mr_cons__set_listened() */
	uint32_t s1 = atomic_load_explicit(&h->listened_seq, memory_order_acquire);
	if (s1 & 1)
		return 1;
	uint32_t n = atomic_load_explicit(&h->listened_n, memory_order_relaxed);
	int hit = n > MR_LISTENED_MAX;
	for (uint32_t i = 0; i < n && i < MR_LISTENED_MAX && !hit; i++)
		hit = atomic_load_explicit(&h->listened[i], memory_order_relaxed) == session_id;
	/* acquire fence: the loads above before seq is read again; pairs with the release
	 * fence after the odd seq in mr_cons__set_listened() */
	atomic_thread_fence(memory_order_acquire);
	if (atomic_load_explicit(&h->listened_seq, memory_order_relaxed) != s1)
		return 1;
	return hit;
}

/* One copy: reserve, copy, submit.  Returns 0, -ENOBUFS when dropped (ring full), or
 * -ENXIO when the ring is lost (its file was truncated; the copy went nowhere). */
static inline int mr_prod__push(struct mr_prod *p, const void *frame, uint32_t len,
				const struct mr_meta *m)
{
	struct mr_rec *r = mr_prod__reserve(p, len, m ? m->wire_len : 0);
	if (!r)
		return -ENOBUFS;
	r->ifindex = m ? m->ifindex : 0;
	r->session_id = m ? m->session_id : 0;
	r->ts_ns = m ? m->ts_ns : 0;
	memcpy(mr_rec__data(r), frame, len < p->max_frame ? len : p->max_frame);
	mr_prod__submit(p);
	return p->guard && mr_prod__lost(p) ? -ENXIO : 0;
}

/* ---------------------------------------------------------------- consumer */

/* Why the consumer last reset the ring: mr_cons.corrupt_why, in words from
 * mr_cons__corruption().  corrupt_at is the ring position of the record (or the
 * consumer's position), corrupt_val the offending value, corrupt_lim the bound it broke. */
enum mr_corrupt {
	MR_CORRUPT_NONE = 0,
	MR_CORRUPT_PROD,      /* the producer's index: not a multiple of 8, or out of reach */
	MR_CORRUPT_SIZE,      /* a record's size: not a multiple of 8, below 8, or past the
			       * published bytes or the ring's end */
	MR_CORRUPT_FLAGS,     /* flag bits this ABI does not define */
	MR_CORRUPT_PAD,       /* a pad record that does not end at the ring's end */
	MR_CORRUPT_SHORT,     /* a frame record shorter than its header */
	MR_CORRUPT_CAP_LEN,   /* cap_len above the ring's max_frame */
	MR_CORRUPT_WIRE_LEN,  /* wire_len below cap_len */
	MR_CORRUPT_STRIDE,    /* size is not the header plus cap_len, rounded up to 8 */
	MR_CORRUPT_TRUNCATED, /* the TRUNCATED flag disagrees with cap_len < wire_len */
};

struct mr_cons {
	struct mr_ring_hdr *hdr;
	const uint8_t *data;
	uint64_t size;
	uint64_t mask;
	uint32_t max_frame;
	int efd;               /* eventfd (owned), -1 if none */
	int fd;                /* shm fd (owned) */
	uint64_t cons;         /* private consumer index: last released position */
	uint64_t pos;          /* read position: end of the last record returned by next() */
	uint64_t cached_prod;
	uint64_t consumed_pkts, consumed_bytes, corrupt_events, corrupt_bytes;
	size_t map_len;
	int guard;            /* SIGBUS guard slot + 1 (0: none, a sealed memfd) */
	uint32_t corrupt_why; /* enum mr_corrupt of the last reset */
	uint64_t corrupt_at, corrupt_val, corrupt_lim;
};

/* A validated view of one record; the header fields are a private snapshot, data points
 * into the ring and stays valid until mr_cons__release(). */
struct mr_frame {
	const uint8_t *data;
	uint32_t cap_len;
	uint32_t wire_len;
	uint32_t ifindex;
	uint32_t session_id;
	uint64_t seq;
	uint64_t ts_ns;
	uint16_t flags;
};

/* 1 once the ring's file was truncated under us (the SIGBUS guard, mirrord/guard.h). */
int mr_cons__lost(const struct mr_cons *c);

/* Counts a corruption event, keeps why (enum mr_corrupt, the value and the bound it
 * broke), skips to the producer's index; returns -EBADMSG. */
int mr_cons__reset(struct mr_cons *c, uint32_t why, uint64_t val, uint64_t lim);

/* The last reset in one line ("record at data offset 4096: cap_len 70000 exceeds the
 * ring's max_frame 9216"); "" when there was none.  Returns snprintf's result. */
int mr_cons__corruption(const struct mr_cons *c, char *buf, size_t len);

/* A producer index the consumer cannot accept: more than a ring ahead of the released
 * index, not a multiple of 8, or behind the read position. */
static inline int mr_cons__prod_bad(const struct mr_cons *c, uint64_t prod)
{
	return prod - c->cons > c->size || (prod & (MR_REC_ALIGN - 1)) || prod - c->pos > c->size;
}

/* prod is the misaligned index the last reset was about: already counted, wait for the
 * producer's next store (it never publishes a misaligned index, so the wait always ends).
 * Any other bad index needs no wait: the reset lands on it, and it then reads as empty. */
static inline int mr_cons__prod_waiting(const struct mr_cons *c, uint64_t prod)
{
	return c->corrupt_why == MR_CORRUPT_PROD && prod == c->corrupt_val && (prod & (MR_REC_ALIGN - 1));
}

/*
 * Return the next record: 1 and *f filled, 0 when the ring is empty, or -EBADMSG when
 * the ring held something impossible (counted; the ring was reset to the producer's
 * index, so the caller may just go on).
 */
static inline int mr_cons__next(struct mr_cons *c, struct mr_frame *f)
{
	for (;;) {
		if (c->pos == c->cached_prod) {
			/* acquire: see the records written before the index;
			 * pairs with the release store in mr_prod__submit() */
			uint64_t prod = atomic_load_explicit(&c->hdr->prod, memory_order_acquire);
			if (prod == c->pos)
				return 0;
			if (mr_cons__prod_bad(c, prod)) {
				/* the misaligned index met last time: counted once; wait for the
				 * producer to publish another instead of resetting (and counting)
				 * on every call */
				if (mr_cons__prod_waiting(c, prod))
					return 0;
				return mr_cons__reset(c, MR_CORRUPT_PROD, prod, c->cons);
			}
			c->cached_prod = prod;
		}
		uint64_t avail = c->cached_prod - c->pos;
		uint64_t off = c->pos & c->mask;
		uint64_t room = c->size - off;
		struct mr_rec h;

		/* Snapshot the header once (the whole 40 bytes when they are there, else the
		 * 8 bytes of a pad) and validate and use only the snapshot.  The compiler
		 * barrier keeps the compiler from reading shared memory again: no double fetch. */
		size_t hn = (room >= MR_REC_HDR_SIZE && avail >= MR_REC_HDR_SIZE) ? MR_REC_HDR_SIZE : 8;
		memcpy(&h, c->data + off, hn);
		__asm__ __volatile__("" ::: "memory");
		if ((h.size & (MR_REC_ALIGN - 1)) || h.size < 8 || h.size > avail || h.size > room)
			return mr_cons__reset(c, MR_CORRUPT_SIZE, h.size, avail < room ? avail : room);
		if (h.flags & ~MR_REC_F_KNOWN)
			return mr_cons__reset(c, MR_CORRUPT_FLAGS, h.flags, MR_REC_F_KNOWN);
		if (h.flags & MR_REC_F_PAD) {
			if (h.size != room)
				return mr_cons__reset(c, MR_CORRUPT_PAD, h.size, room);
			c->pos += h.size;
			continue;
		}
		if (hn < MR_REC_HDR_SIZE || h.size < MR_REC_HDR_SIZE)
			return mr_cons__reset(c, MR_CORRUPT_SHORT, h.size, MR_REC_HDR_SIZE);
		if (h.cap_len > c->max_frame)
			return mr_cons__reset(c, MR_CORRUPT_CAP_LEN, h.cap_len, c->max_frame);
		if (h.wire_len < h.cap_len)
			return mr_cons__reset(c, MR_CORRUPT_WIRE_LEN, h.wire_len, h.cap_len);
		if (MR_ALIGN8((uint64_t)MR_REC_HDR_SIZE + h.cap_len) != h.size)
			return mr_cons__reset(c, MR_CORRUPT_STRIDE, h.size,
					      MR_ALIGN8((uint64_t)MR_REC_HDR_SIZE + h.cap_len));
		if (((h.flags & MR_REC_F_TRUNCATED) != 0) != (h.cap_len < h.wire_len))
			return mr_cons__reset(c, MR_CORRUPT_TRUNCATED, h.cap_len, h.wire_len);
		f->data = c->data + off + MR_REC_HDR_SIZE;
		f->cap_len = h.cap_len;
		f->wire_len = h.wire_len;
		f->ifindex = h.ifindex;
		f->session_id = h.session_id;
		f->seq = h.seq;
		f->ts_ns = h.ts_ns;
		f->flags = h.flags;
		c->pos += h.size;
		c->consumed_pkts++;
		c->consumed_bytes += h.cap_len;
		return 1;
	}
}

/* Give every record returned by next() back to the producer. */
static inline void mr_cons__release(struct mr_cons *c);

/* Batch peek: up to n validated records into frames[]; returns how many.  Corruption
 * events met on the way are counted (and the ring reset) and added to *corrupt.  The
 * frames stay valid until mr_cons__release(). */
static inline unsigned mr_cons__peek(struct mr_cons *c, struct mr_frame *frames, unsigned n,
				     uint64_t *corrupt)
{
	unsigned i = 0;
	for (unsigned tries = 0; i < n && tries < n; tries++) {
		int r = mr_cons__next(c, &frames[i]);
		if (r == 0)
			break;
		if (r < 0 && c->guard && mr_cons__lost(c))
			break; /* the zeros that replaced a lost mapping: not corruption */
		if (r < 0)
			(*corrupt)++;
		else
			i++;
	}
	return i;
}

static inline void mr_cons__release(struct mr_cons *c)
{
	struct mr_ring_hdr *h = c->hdr;
	c->cons = c->pos;
	/* release: our reads of the records happen before the producer reuses the space;
	 * pairs with the acquire load of hdr->cons in mr_prod__reserve() */
	atomic_store_explicit(&h->cons, c->cons, memory_order_release);
	atomic_store_explicit(&h->consumed_pkts, c->consumed_pkts, memory_order_relaxed);
	atomic_store_explicit(&h->consumed_bytes, c->consumed_bytes, memory_order_relaxed);
}

/*
 * About to sleep on the eventfd.  Returns 1: sleep (the producer will write the eventfd
 * on its next submit); 0: records arrived meanwhile, drain again instead.
 */
static inline int mr_cons__prepare_sleep(struct mr_cons *c)
{
	/* republish our index: heals a scribbled hdr->cons, pairs as in release() */
	atomic_store_explicit(&c->hdr->cons, c->cons, memory_order_release);
	/* seq_cst store then seq_cst load: the flag is visible before we look at hdr->prod;
	 * the other half of the Dekker pair in mr_prod__submit()/mr_prod__kick() */
	atomic_store_explicit(&c->hdr->need_wakeup, 1, memory_order_seq_cst);
	uint64_t prod = atomic_load_explicit(&c->hdr->prod, memory_order_seq_cst);
	/* a misaligned index already counted is "nothing to read": sleep until the producer
	 * publishes another (its next submit, or a full ring's republish), not spin */
	if (prod != c->pos && !mr_cons__prod_waiting(c, prod)) {
		atomic_store_explicit(&c->hdr->need_wakeup, 0, memory_order_relaxed);
		return 0;
	}
	return 1;
}

/*
 * The sessions whose output someone listens to (line 6), for producers of when_listened
 * sessions; n over MR_LISTENED_MAX: every session counts as listened.  The write side of
 * a seqlock (one writer: the consumer).  Rare (a listener came or went), not per batch.
 */
static inline void mr_cons__set_listened(struct mr_cons *c, const uint32_t *ids, uint32_t n)
{
	struct mr_ring_hdr *h = c->hdr;
	uint32_t s = atomic_load_explicit(&h->listened_seq, memory_order_relaxed);
	s |= 1; /* odd: being written (a scribbled seq is just taken over) */
	atomic_store_explicit(&h->listened_seq, s, memory_order_relaxed);
	/* release fence: the odd seq before the ids; pairs with the acquire fence in
	 * mr_prod__listened() */
	atomic_thread_fence(memory_order_release);
	if (n > MR_LISTENED_MAX) {
		atomic_store_explicit(&h->listened_n, MR_LISTENED_ALL, memory_order_relaxed);
	} else {
		for (uint32_t i = 0; i < n; i++)
			atomic_store_explicit(&h->listened[i], ids[i], memory_order_relaxed);
		atomic_store_explicit(&h->listened_n, n, memory_order_relaxed);
	}
	/* release: the ids before the even seq; pairs with the first acquire load of seq in
	 * mr_prod__listened() */
	atomic_store_explicit(&h->listened_seq, s + 1, memory_order_release);
}

/* ---------------------------------------------------------------- setup (ring.c) */

/* Snapshot of every counter in the header (relaxed reads). */
struct mr_ring_counters {
	uint64_t pushed_pkts, pushed_bytes, drop_full_pkts, drop_full_bytes, truncated_pkts;
	uint64_t wakeups;
	uint64_t consumed_pkts, consumed_bytes, corrupt_events, corrupt_bytes, attaches;
	uint64_t prod, cons;   /* the shared indices as read */
	uint32_t data_size, max_frame, producer_pid;
	int32_t producer_eventfd;
};

/* path NULL or "": a memfd ring.  Otherwise a file created under a temporary name and
 * renamed into place once initialised.  data_size: power of two in [MIN, MAX] (0 = default);
 * max_frame: 64..MR_FRAME_MAX (0 = default), and a record of max_frame must fit in a
 * quarter of the ring.  Returns 0 or -errno; err gets one line naming the reason. */
int mr_prod__create(struct mr_prod *p, const char *path, uint32_t data_size, uint32_t max_frame,
		    const char *name, char *err, size_t errlen);
/* Unmaps, closes, and unlinks the named file (the producer owns its ring). */
void mr_prod__destroy(struct mr_prod *p, int unlink_file);

/* Attach to a ring through its shm fd (dup'ed; the caller keeps its own).  efd: the
 * ring's eventfd (dup'ed), or -1 to fetch it from the producer with pidfd_getfd(2),
 * or -2 for none (poll).  Fails with -EPROTO and a message on a foreign or mismatched
 * ring. */
int mr_cons__attach(struct mr_cons *c, int fd, int efd, char *err, size_t errlen);
/* The same, refusing (-EFBIG, before mapping anything) a ring whose data_size is above
 * max_data (0: no limit beyond MR_RING_MAX_DATA). */
int mr_cons__attach_max(struct mr_cons *c, int fd, int efd, uint64_t max_data, char *err, size_t errlen);
void mr_cons__detach(struct mr_cons *c);

/*
 * lost(): 1 once the mapping was replaced by the SIGBUS guard (mirrord/guard.h: the
 * ring's file was truncated; the ring is gone for good: detach / stop mirroring into it),
 * else 0.  One acquire load; check it once per batch.
 * lost_reason(): why, in one line ("file truncated to 4096 of 69632 bytes"); "" if not lost.
 */
int mr_prod__lost_reason(const struct mr_prod *p, char *buf, size_t len);
int mr_cons__lost_reason(const struct mr_cons *c, char *buf, size_t len);

void mr_ring__counters(const struct mr_ring_hdr *h, struct mr_ring_counters *out);
/* Counters of a ring without attaching (read-only; for status tools).  0 or -errno. */
int mr_ring__probe(int fd, struct mr_ring_counters *out, char *err, size_t errlen);

#endif /* MIRRORD_RING_H */
