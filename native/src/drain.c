/* SPDX-License-Identifier: MIT */
/* Delivery of a ring's records to outputs (write(2) / sendmmsg(2)); see mirrord/drain.h. */
#define _GNU_SOURCE
#include "mirrord/drain.h"
#include "mirrord/encap.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int mr_frame__l3_offset(const uint8_t *f, uint32_t len, uint16_t *ethertype)
{
	uint32_t off = 12;
	uint16_t et;

	for (;;) {
		if (len < off + 2)
			return -1;
		et = (uint16_t)(f[off] << 8 | f[off + 1]);
		off += 2;
		if (et != 0x8100 && et != 0x88a8 && et != 0x9100)
			break;
		off += 2; /* TCI */
	}
	*ethertype = et;
	return (int)off;
}

static const uint64_t lat_le_ns[MR_LAT_BUCKETS - 1] = {
	10000, 20000, 50000, 100000, 200000, 500000,
	1000000, 2000000, 5000000, 10000000, 20000000, 50000000, 100000000,
};

uint64_t mr_lat__bound_ns(unsigned i)
{
	return i < MR_LAT_BUCKETS - 1 ? lat_le_ns[i] : UINT64_MAX;
}

static inline uint64_t realtime_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* One delivered copy stamped ts (from shared memory: any value) into its delay bucket.
 * Inline here (called per copy); encap.c reaches it through mr_lat__note. */
static inline void lat_note(struct mr_drain_stats *st, uint64_t now, uint64_t ts)
{
	if (!ts)
		return;
	uint64_t d = now > ts ? now - ts : 0;
	unsigned b = 0;
	while (b < MR_LAT_BUCKETS - 1 && d > lat_le_ns[b])
		b++;
	st->lat[b]++;
	st->lat_sum_ns += d < MR_LAT_CAP_NS ? d : MR_LAT_CAP_NS;
}

uint64_t mr_lat__now(void)
{
	return realtime_ns();
}

void mr_lat__note(struct mr_drain_stats *st, uint64_t now, uint64_t ts)
{
	lat_note(st, now, ts);
}

static void count_error(struct mr_drain_stats *st, int e)
{
	if (e == EAGAIN || e == EWOULDBLOCK || e == ENOBUFS) {
		st->drop_busy++;
	} else {
		st->drop_error++;
		st->last_errno = e; /* what an operator must act on; busy is flow control */
	}
}

#define MR_MMSG_BATCH 64

static void flush_mmsg(int fd, struct mmsghdr *msgs, const uint8_t *trunc, const uint64_t *ts,
		       unsigned n, struct mr_drain_stats *st)
{
	unsigned i = 0;
	while (i < n) {
		int r = sendmmsg(fd, msgs + i, n - i, MSG_DONTWAIT);
		if (r > 0) {
			uint64_t now = realtime_ns();
			for (unsigned j = i; j < i + (unsigned)r; j++) {
				st->bytes += msgs[j].msg_len;
				st->truncated += trunc[j];
				lat_note(st, now, ts[j]);
			}
			st->pkts += (unsigned)r;
			i += (unsigned)r;
		} else if (r < 0 && errno == EINTR) {
			continue;
		} else {
			count_error(st, r < 0 ? errno : EIO); /* this one failed: drop it, go on */
			i++;
		}
	}
}

/*
 * Start loading the record after the one being sent while the send syscall runs.  The
 * ring is larger than a core's L2 and was written by another core, so the next frame's
 * lines come from L3 or DRAM; the hardware prefetcher only starts on them after the
 * first misses.  Guess the next record is as long as this one, and stop at the
 * published index: a line the producer is still writing is left alone.
 */
static inline void prefetch_next(const struct mr_cons *c, uint32_t stride)
{
	uint64_t n = c->cached_prod - c->pos;
	if (n > stride)
		n = stride;
	for (uint64_t o = 0; o < n; o += MR_CACHELINE)
		__builtin_prefetch(c->data + ((c->pos + o) & c->mask), 0, 3);
}

/*
 * write(2) without libc's cancellation wrapper.  Once a process has ever started a
 * thread (the daemon does, briefly, to bring an output up; an embedding forwarder may
 * run many), every libc write() toggles asynchronous cancellation around the syscall:
 * about 1.3 % of the drain's time at 1514-byte frames (perf, bench/sink.py).  The drain
 * never runs in a cancellable thread.
 */
static inline ssize_t raw_write(int fd, const void *buf, size_t len)
{
	return syscall(SYS_write, fd, buf, len);
}

static int match(const struct mr_route *rt, uint32_t session_id)
{
	return rt->session_id == 0 || rt->session_id == session_id;
}

int mr_cons__drain(struct mr_cons *c, const struct mr_route *routes, struct mr_drain_stats *stats,
		   unsigned nroutes, unsigned budget, struct mr_drain_totals *totals)
{
	struct mmsghdr msgs[MR_MMSG_BATCH];
	struct iovec iov[MR_MMSG_BATCH];
	uint8_t trunc[MR_MMSG_BATCH];
	uint64_t ts[MR_MMSG_BATCH];
	uint64_t now = 0;
	unsigned nb = 0, n = 0, last = 0, batch_route = 0, sent = 0;
	struct mr_frame f = {0};
	struct mr_encap *enc = NULL; /* the encap whose batches wait (they point into the ring) */

	for (unsigned i = 0; i < nroutes; i++)
		if (routes[i].mode < MR_DRAIN_WRITE || routes[i].mode > MR_DRAIN_ENCAP ||
		    (routes[i].mode == MR_DRAIN_ENCAP && !routes[i].encap))
			return -EINVAL;
	if (mr_cons__lost(c))
		return -ENXIO;
	while (n < budget) {
		int r = mr_cons__next(c, &f);
		if (r == 0)
			break;
		n++;
		if (r < 0) {
			/* the zeros that replaced a lost mapping are not corruption: stop */
			if (mr_cons__lost(c))
				break;
			totals->corrupt++;
			continue;
		}
		totals->records++;
		/* consecutive records nearly always share a session: try the last route first
		 * (exact match only, so a catch-all route never shadows a later exact one) */
		unsigned ri = nroutes;
		if (last < nroutes && routes[last].session_id == f.session_id)
			ri = last;
		else
			for (unsigned i = 0; i < nroutes; i++)
				if (match(&routes[i], f.session_id)) {
					ri = i;
					break;
				}
		if (ri == nroutes) {
			totals->unrouted++;
			continue;
		}
		last = ri;
		const struct mr_route *rt = &routes[ri];
		struct mr_drain_stats *st = &stats[ri];
		if (rt->fd < 0) {
			st->drop_no_output++;
			continue;
		}
		const uint8_t *data = f.data;
		uint32_t len = f.cap_len;
		prefetch_next(c, (uint32_t)MR_ALIGN8((uint64_t)MR_REC_HDR_SIZE + len));
		if (rt->mode == MR_DRAIN_WRITE_L3) {
			uint16_t et;
			int off = mr_frame__l3_offset(data, len, &et);
			if (off < 0 || (et != 0x0800 && et != 0x86dd) || (uint32_t)off >= len) {
				st->drop_not_ip++;
				continue;
			}
			data += off;
			len -= (uint32_t)off;
		}
		if (rt->mode == MR_DRAIN_ENCAP) {
			if (enc && enc != rt->encap)
				mr_encap__flush(enc);
			enc = rt->encap;
			mr_encap__push(enc, &f, st);
			continue;
		}
		if (rt->mode == MR_DRAIN_SENDMMSG) {
			if (nb && batch_route != ri) { /* one batch at a time, for one socket */
				flush_mmsg(routes[batch_route].fd, msgs, trunc, ts, nb, &stats[batch_route]);
				nb = 0;
			}
			batch_route = ri;
			iov[nb].iov_base = (void *)data;
			iov[nb].iov_len = len;
			memset(&msgs[nb], 0, sizeof(msgs[nb]));
			msgs[nb].msg_hdr.msg_iov = &iov[nb];
			msgs[nb].msg_hdr.msg_iovlen = 1;
			trunc[nb] = (f.flags & MR_REC_F_TRUNCATED) != 0;
			ts[nb] = f.ts_ns;
			if (++nb == MR_MMSG_BATCH) {
				flush_mmsg(rt->fd, msgs, trunc, ts, nb, st);
				nb = 0;
			}
			continue;
		}
		ssize_t w;
		do
			w = raw_write(rt->fd, data, len);
		while (w < 0 && errno == EINTR);
		if (w < 0) {
			count_error(st, errno);
		} else {
			st->pkts++;
			st->bytes += (uint64_t)w;
			st->truncated += (f.flags & MR_REC_F_TRUNCATED) != 0;
			if ((sent++ & 15) == 0)
				now = realtime_ns(); /* see MR_LAT_BUCKETS in drain.h */
			lat_note(st, now, f.ts_ns);
		}
	}
	if (nb)
		flush_mmsg(routes[batch_route].fd, msgs, trunc, ts, nb, &stats[batch_route]);
	if (enc)
		mr_encap__flush(enc);
	mr_cons__release(c);
	/* lost during this batch: what was sent before the fault went out whole (a send
	 * that met the fault failed with EFAULT and counts as drop_error) */
	return mr_cons__lost(c) ? -ENXIO : (int)n;
}

void mr_drain_stats__add(struct mr_drain_stats *acc, const struct mr_drain_stats *src, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		acc[i].pkts += src[i].pkts;
		acc[i].bytes += src[i].bytes;
		acc[i].drop_busy += src[i].drop_busy;
		acc[i].drop_error += src[i].drop_error;
		acc[i].drop_not_ip += src[i].drop_not_ip;
		acc[i].drop_no_output += src[i].drop_no_output;
		acc[i].truncated += src[i].truncated;
		for (unsigned b = 0; b < MR_LAT_BUCKETS; b++)
			acc[i].lat[b] += src[i].lat[b];
		acc[i].lat_sum_ns += src[i].lat_sum_ns;
	}
}

unsigned mr_drain_stats__next_errno(const struct mr_drain_stats *s, unsigned i, unsigned n)
{
	while (i < n && !s[i].last_errno)
		i++;
	return i;
}

uint64_t mr_cons__drain_set(struct mr_drain_job *jobs, unsigned n, unsigned budget, uint64_t now_ns,
			    uint64_t idle_ns, unsigned *attention)
{
	uint64_t total = 0;
	unsigned look = 0;

	for (unsigned i = 0; i < n; i++) {
		struct mr_drain_job *j = &jobs[i];
		int r = mr_cons__drain(j->c, j->routes, j->stats, j->nroutes, budget, j->totals);
		j->result = r;
		if (r > 0) {
			total += (unsigned)r;
			j->busy_ns = now_ns;
		}
		look += r < 0 || (unsigned)r >= budget || j->totals->corrupt != j->corrupt ||
			now_ns - j->busy_ns >= idle_ns;
	}
	*attention = look;
	return total;
}
