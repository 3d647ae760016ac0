/* SPDX-License-Identifier: MIT */
/* Setup of the mirror ring: create, attach, validate, reset, corruption naming; the hot
 * path is inline in ring.h.  The SIGBUS guard is in guard.c, delivery in drain.c.
 * Long because every check of an untrusted header or record names its field, value and
 * bound (read_header, mr_cons__corruption): one refusal, one sentence. */
#define _GNU_SOURCE
#include "mirrord/ring.h"
#include "mirrord/guard.h"
#include "util.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

static int is_pow2(uint64_t x)
{
	return x && !(x & (x - 1));
}

static int check_geometry(uint32_t data_size, uint32_t max_frame, char *err, size_t errlen)
{
	if (!is_pow2(data_size) || data_size < MR_RING_MIN_DATA || data_size > MR_RING_MAX_DATA)
		return fail(err, errlen, -EINVAL,
			    "data_size %u: must be a power of two between %u and %u bytes", data_size,
			    MR_RING_MIN_DATA, MR_RING_MAX_DATA);
	if (max_frame < 64 || max_frame > MR_FRAME_MAX)
		return fail(err, errlen, -EINVAL, "max_frame %u: must be between 64 and %u bytes",
			    max_frame, MR_FRAME_MAX);
	if (4 * MR_ALIGN8((uint64_t)MR_REC_HDR_SIZE + max_frame) > data_size)
		return fail(err, errlen, -EINVAL,
			    "max_frame %u: a record of that size must fit four times in data_size %u",
			    max_frame, data_size);
	return 0;
}


MR_EXPORT int mr_prod__lost(const struct mr_prod *p)
{
	return p->guard && mr_guard__lost(p->guard - 1);
}

int mr_cons__lost(const struct mr_cons *c)
{
	return c->guard && mr_guard__lost(c->guard - 1);
}

static int lost_reason(int lost, int fd, size_t map_len, char *buf, size_t len)
{
	struct stat st;
	if (!lost)
		return snprintf(buf, len, "%s", "");
	if (fd >= 0 && fstat(fd, &st) == 0 && (uint64_t)st.st_size < map_len)
		return snprintf(buf, len, "file truncated to %lld of %zu bytes", (long long)st.st_size,
				map_len);
	/* a hole its filesystem had no room for (a sparse file on a full tmpfs) */
	return snprintf(buf, len, "a page of the ring could not be backed (no space or memory)");
}

MR_EXPORT int mr_prod__lost_reason(const struct mr_prod *p, char *buf, size_t len)
{
	return lost_reason(mr_prod__lost(p), p->fd, p->map_len, buf, len);
}

int mr_cons__lost_reason(const struct mr_cons *c, char *buf, size_t len)
{
	return lost_reason(mr_cons__lost(c), c->fd, c->map_len, buf, len);
}

/* A mapping nobody can shrink needs no guard: a memfd sealed with F_SEAL_SHRINK. */
static int shrink_sealed(int fd)
{
	int seals = fcntl(fd, F_GET_SEALS);
	return seals >= 0 && (seals & F_SEAL_SHRINK);
}

MR_EXPORT int mr_prod__create(struct mr_prod *p, const char *path, uint32_t data_size, uint32_t max_frame,
		    const char *name, char *err, size_t errlen)
{
	char tmp[sizeof(p->path) + 32];
	int rc;

	memset(p, 0, sizeof(*p));
	p->fd = p->efd = -1;
	if (!data_size)
		data_size = MR_RING_DEFAULT_DATA;
	if (!max_frame)
		max_frame = MR_FRAME_DEFAULT;
	if ((rc = check_geometry(data_size, max_frame, err, errlen)))
		return rc;
	p->map_len = (size_t)MR_RING_HDR_SIZE + data_size;

	if (path && *path) {
		if (strlen(path) >= sizeof(p->path))
			return fail(err, errlen, -ENAMETOOLONG, "ring path is longer than %zu bytes",
				    sizeof(p->path) - 1);
		strcpy(p->path, path);
		snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
		p->fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0660); /* & ~umask */
		if (p->fd < 0)
			return fail(err, errlen, -errno, "cannot create %s: %s", tmp, strerror(errno));
	} else {
		p->fd = memfd_create("mirrord-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
		if (p->fd < 0)
			return fail(err, errlen, -errno, "memfd_create: %s", strerror(errno));
	}
	if (ftruncate(p->fd, (off_t)p->map_len) < 0) {
		rc = fail(err, errlen, -errno, "cannot size the ring to %zu bytes: %s", p->map_len,
			  strerror(errno));
		goto out_close;
	}
	/* Back every page now: a tmpfs (or memory cgroup) without room says so here, once,
	 * instead of a SIGBUS on the packet path at the first copy that lands on a page
	 * nobody could allocate (MAP_POPULATE ignores such failures). */
	if ((rc = posix_fallocate(p->fd, 0, (off_t)p->map_len))) {
		rc = fail(err, errlen, -rc, "cannot allocate the ring's %zu bytes%s%s: %s", p->map_len,
			  p->path[0] ? " for " : "", p->path[0] ? p->path : "", strerror(rc));
		goto out_close;
	}
	/* A consumer must not be able to shrink the object under the producer (SIGBUS). */
	if (!p->path[0] && fcntl(p->fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
		rc = fail(err, errlen, -errno, "cannot seal the memfd: %s", strerror(errno));
		goto out_close;
	}

	void *base = mmap(NULL, p->map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, p->fd, 0);
	if (base == MAP_FAILED) {
		rc = fail(err, errlen, -errno, "mmap of %zu bytes: %s", p->map_len, strerror(errno));
		goto out_close;
	}
	/* a named file can be truncated under us from now on (even before the header is
	 * written): guard the mapping before the first store */
	if (p->path[0]) {
		int g = mr_guard__add(base, p->map_len);
		if (g < 0) {
			rc = fail(err, errlen, g, "cannot guard the ring's mapping: %s",
				  g == -ENOSPC ? "the table of guarded rings is full" : strerror(-g));
			munmap(base, p->map_len);
			goto out_close;
		}
		p->guard = g + 1;
	}
	p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (p->efd < 0) {
		rc = fail(err, errlen, -errno, "eventfd: %s", strerror(errno));
		goto out_unmap;
	}

	struct mr_ring_hdr *h = base;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	h->abi_version = MR_RING_ABI_VERSION;
	h->hdr_size = MR_RING_HDR_SIZE;
	h->data_size = data_size;
	h->max_frame = max_frame;
	h->rec_hdr_size = MR_REC_HDR_SIZE;
	h->producer_pid = (uint32_t)getpid();
	h->producer_eventfd = p->efd;
	h->created_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	if (name)
		strncpy(h->name, name, sizeof(h->name) - 1);
	/* magic last: a reader that sees it sees a complete header (the named file is only
	 * renamed into place afterwards anyway) */
	__atomic_store_n(&h->magic, MR_RING_MAGIC, __ATOMIC_RELEASE);

	p->hdr = h;
	p->data = (uint8_t *)base + MR_RING_HDR_SIZE;
	p->size = data_size;
	p->mask = data_size - 1;
	p->max_frame = max_frame;

	if (p->path[0] && rename(tmp, p->path) < 0) {
		rc = fail(err, errlen, -errno, "cannot publish %s: %s", p->path, strerror(errno));
		close(p->efd);
		p->efd = -1;
		goto out_unmap;
	}
	return 0;

out_unmap:
	if (p->guard)
		mr_guard__remove(p->guard - 1);
	p->guard = 0;
	munmap(base, p->map_len);
out_close:
	if (p->path[0])
		unlink(tmp);
	close(p->fd);
	p->fd = -1;
	p->hdr = NULL;
	return rc;
}

MR_EXPORT void mr_prod__destroy(struct mr_prod *p, int unlink_file)
{
	if (p->hdr) {
		mr_prod__submit(p);
		if (p->guard)
			mr_guard__remove(p->guard - 1);
		munmap(p->hdr, p->map_len);
	}
	p->guard = 0;
	if (unlink_file && p->path[0])
		unlink(p->path);
	if (p->efd >= 0)
		close(p->efd);
	if (p->fd >= 0)
		close(p->fd);
	p->hdr = NULL;
	p->fd = p->efd = -1;
}

static int fetch_eventfd(const struct mr_ring_hdr *h, char *err, size_t errlen)
{
	int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)h->producer_pid, 0);
	if (pidfd < 0)
		return fail(err, errlen, -errno, "producer pid %u: pidfd_open: %s", h->producer_pid,
			    strerror(errno));
	int efd = (int)syscall(SYS_pidfd_getfd, pidfd, h->producer_eventfd, 0);
	int e = errno;
	close(pidfd);
	if (efd < 0)
		return fail(err, errlen, -e, "producer pid %u: cannot fetch its eventfd %d: %s",
			    h->producer_pid, h->producer_eventfd, strerror(e));
	/* make sure it is an eventfd, not whatever now has that number */
	char link[64], target[64];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", efd);
	ssize_t n = readlink(link, target, sizeof(target) - 1);
	if (n < 0 || (target[n] = 0, strcmp(target, "anon_inode:[eventfd]") != 0)) {
		close(efd);
		return fail(err, errlen, -EBADF, "producer pid %u: fd %d is not an eventfd",
			    h->producer_pid, h->producer_eventfd);
	}
	return efd;
}

static const char *file_type(mode_t m)
{
	return S_ISDIR(m) ? "a directory" : S_ISFIFO(m) ? "a FIFO" : S_ISSOCK(m) ? "a socket" :
	       S_ISCHR(m) ? "a character device" : S_ISBLK(m) ? "a block device" :
	       S_ISLNK(m) ? "a symbolic link" : "not a regular file";
}

/* Read and check the immutable part of a ring's header; fills *h0 on success.  Nothing
 * read from a file that fails a check is echoed, except the magic of a regular file. */
static int read_header(int fd, struct mr_ring_hdr *h0, size_t len, uint64_t max_data, char *err,
		       size_t errlen)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return fail(err, errlen, -errno, "fstat: %s", strerror(errno));
	if (!S_ISREG(st.st_mode)) /* a FIFO would block the reader, a device misbehave */
		return fail(err, errlen, -EPROTO, "not a mirrord ring: %s (mode 0%o)", file_type(st.st_mode),
			    (unsigned)(st.st_mode & 07777));
	if (max_data && (uint64_t)st.st_size > MR_RING_HDR_SIZE + max_data) /* before any read */
		return fail(err, errlen, -EFBIG,
			    "ring file is %lld bytes, above the limit of %llu (4096 + max data_size %llu)",
			    (long long)st.st_size, (unsigned long long)(MR_RING_HDR_SIZE + max_data),
			    (unsigned long long)max_data);
	if (st.st_size < (off_t)sizeof(*h0))
		return fail(err, errlen, -EPROTO, "not a mirrord ring: %lld bytes, shorter than its header",
			    (long long)st.st_size);
	ssize_t n = pread(fd, h0, len, 0);
	if (n != (ssize_t)len)
		return fail(err, errlen, n < 0 ? -errno : -EIO, "cannot read the ring header: %s",
			    n < 0 ? strerror(errno) : "short read");
	if (h0->magic != MR_RING_MAGIC)
		return fail(err, errlen, -EPROTO, "not a mirrord ring: magic 0x%016llx, expected 0x%016llx",
			    (unsigned long long)h0->magic, (unsigned long long)MR_RING_MAGIC);
	if (h0->abi_version != MR_RING_ABI_VERSION)
		return fail(err, errlen, -EPROTO, "ring ABI version %u, this build speaks version %u",
			    h0->abi_version, MR_RING_ABI_VERSION);
	if (h0->hdr_size != MR_RING_HDR_SIZE || h0->rec_hdr_size != MR_REC_HDR_SIZE)
		return fail(err, errlen, -EPROTO,
			    "ring header size %u / record header size %u, expected %u / %u", h0->hdr_size,
			    h0->rec_hdr_size, MR_RING_HDR_SIZE, MR_REC_HDR_SIZE);
	if (check_geometry(h0->data_size, h0->max_frame, err, errlen))
		return fail(err, errlen, -EPROTO, "ring declares data_size %u and max_frame %u: invalid",
			    h0->data_size, h0->max_frame);
	if ((uint64_t)st.st_size != (uint64_t)h0->hdr_size + h0->data_size)
		return fail(err, errlen, -EPROTO,
			    "ring file is %lld bytes but its header declares %llu (4096 + data_size %u)",
			    (long long)st.st_size, (unsigned long long)h0->hdr_size + h0->data_size,
			    h0->data_size);
	if (max_data && h0->data_size > max_data)
		return fail(err, errlen, -EFBIG, "ring declares data_size %u, above the limit of %llu",
			    h0->data_size, (unsigned long long)max_data);
	return 0;
}

int mr_ring__probe(int fd, struct mr_ring_counters *out, char *err, size_t errlen)
{
	struct mr_ring_hdr h0;
	int rc = read_header(fd, &h0, sizeof(h0), 0, err, errlen);
	if (rc == 0)
		mr_ring__counters(&h0, out);
	return rc;
}

int mr_cons__attach(struct mr_cons *c, int fd, int efd, char *err, size_t errlen)
{
	return mr_cons__attach_max(c, fd, efd, 0, err, errlen);
}

int mr_cons__attach_max(struct mr_cons *c, int fd, int efd, uint64_t max_data, char *err, size_t errlen)
{
	struct mr_ring_hdr h0;

	memset(c, 0, sizeof(*c));
	c->fd = c->efd = -1;
	/* only the immutable line 0 is read for validation */
	int rc = read_header(fd, &h0, offsetof(struct mr_ring_hdr, prod), max_data, err, errlen);
	if (rc)
		return rc;
	size_t map_len = (size_t)h0.hdr_size + h0.data_size;

	void *base = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
	if (base == MAP_FAILED)
		return fail(err, errlen, -errno, "mmap of %zu bytes: %s", map_len, strerror(errno));
	/* a file the producer (or anyone who can write it) may shrink: guard it before the
	 * first access.  A memfd sealed against shrinking needs nothing. */
	if (!shrink_sealed(fd)) {
		int g = mr_guard__add(base, map_len);
		if (g < 0) {
			munmap(base, map_len);
			return fail(err, errlen, g, "cannot guard the ring's mapping: %s",
				    g == -ENOSPC ? "the table of guarded rings is full" : strerror(-g));
		}
		c->guard = g + 1;
	}
	/* the consumer writes only header lines; a stray write into the data area faults */
	if (mprotect((uint8_t *)base + MR_RING_HDR_SIZE, h0.data_size, PROT_READ) < 0) {
		rc = fail(err, errlen, -errno, "mprotect of the data area: %s", strerror(errno));
		goto out_unmap;
	}
	c->hdr = base;
	c->data = (const uint8_t *)base + MR_RING_HDR_SIZE;
	/* geometry from the validated snapshot; never reread from shared memory */
	c->size = h0.data_size;
	c->mask = h0.data_size - 1;
	c->max_frame = h0.max_frame;
	c->map_len = map_len;

	if (efd == -1) {
		efd = fetch_eventfd(&h0, err, errlen);
		if (efd < 0) {
			rc = efd;
			goto out_unmap;
		}
		c->efd = efd;
	} else if (efd >= 0 && (c->efd = fcntl(efd, F_DUPFD_CLOEXEC, 0)) < 0) {
		rc = fail(err, errlen, -errno, "dup of the eventfd: %s", strerror(errno));
		goto out_unmap;
	}
	if ((c->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0) {
		rc = fail(err, errlen, -errno, "dup of the ring fd: %s", strerror(errno));
		goto out_unmap;
	}

	/* resume where the ring stands: a restarted consumer goes on from the shared index */
	c->cons = c->pos = c->cached_prod =
		atomic_load_explicit(&c->hdr->cons, memory_order_acquire) & ~(uint64_t)(MR_REC_ALIGN - 1);
	c->consumed_pkts = atomic_load_explicit(&c->hdr->consumed_pkts, memory_order_relaxed);
	c->consumed_bytes = atomic_load_explicit(&c->hdr->consumed_bytes, memory_order_relaxed);
	c->corrupt_events = atomic_load_explicit(&c->hdr->corrupt_events, memory_order_relaxed);
	c->corrupt_bytes = atomic_load_explicit(&c->hdr->corrupt_bytes, memory_order_relaxed);
	atomic_fetch_add_explicit(&c->hdr->attaches, 1, memory_order_relaxed);
	return 0;

out_unmap:
	if (c->efd >= 0)
		close(c->efd);
	if (c->guard)
		mr_guard__remove(c->guard - 1);
	munmap(base, map_len);
	c->hdr = NULL;
	c->guard = 0;
	c->efd = c->fd = -1;
	return rc;
}

void mr_cons__detach(struct mr_cons *c)
{
	if (c->hdr) {
		/* a sleeping flag left behind would make the producer write the eventfd once;
		 * harmless, but clear it */
		atomic_store_explicit(&c->hdr->need_wakeup, 0, memory_order_relaxed);
		/* nobody drains the ring now: no output of a when_listened session is listened
		 * to through it (its producer skips those copies, counted, until a consumer says
		 * otherwise) */
		mr_cons__set_listened(c, NULL, 0);
		if (c->guard)
			mr_guard__remove(c->guard - 1);
		munmap(c->hdr, c->map_len);
	}
	c->guard = 0;
	if (c->efd >= 0)
		close(c->efd);
	if (c->fd >= 0)
		close(c->fd);
	c->hdr = NULL;
	c->fd = c->efd = -1;
}

int mr_cons__reset(struct mr_cons *c, uint32_t why, uint64_t val, uint64_t lim)
{
	/* the zero pages that replaced a lost mapping are not corruption: record nothing */
	if (c->guard && mr_cons__lost(c))
		return -EBADMSG;
	/* A bad prod: land on the very value that failed (next() loaded it with acquire), so
	 * that corrupt_val and pos agree.  A bad record: the producer's index now.  acquire:
	 * pairs with the release store in mr_prod__submit(). */
	uint64_t prod = (why == MR_CORRUPT_PROD ? val : atomic_load_explicit(&c->hdr->prod, memory_order_acquire)) &
			~(uint64_t)(MR_REC_ALIGN - 1);
	/* Always the producer's index, even one behind the read position: the records
	 * between it and pos are then delivered again.  Staying put instead would need to
	 * know whether pos was reached by reading records the producer really wrote or by
	 * reading stale ones past a scribbled index, and a wrong guess is a livelock. */
	uint64_t skipped = prod - c->pos;

	c->corrupt_why = why;
	c->corrupt_at = c->pos;
	c->corrupt_val = val;
	c->corrupt_lim = lim;
	c->corrupt_events++;
	if (skipped <= c->size)
		c->corrupt_bytes += skipped;
	/* Skip to the producer's index.  The shared cons moves at the next release(), so
	 * records returned before the reset stay untouched until the caller is done. */
	c->pos = c->cached_prod = prod;
	atomic_store_explicit(&c->hdr->corrupt_events, c->corrupt_events, memory_order_relaxed);
	atomic_store_explicit(&c->hdr->corrupt_bytes, c->corrupt_bytes, memory_order_relaxed);
	return -EBADMSG;
}

int mr_cons__corruption(const struct mr_cons *c, char *buf, size_t len)
{
	uint64_t v = c->corrupt_val, l = c->corrupt_lim, off = c->corrupt_at & c->mask;
	char at[64];

	snprintf(at, sizeof(at), "record at data offset %" PRIu64, off);
	switch (c->corrupt_why) {
	case MR_CORRUPT_NONE:
		return snprintf(buf, len, "%s", "");
	case MR_CORRUPT_PROD:
		if (v & (MR_REC_ALIGN - 1))
			return snprintf(buf, len, "producer index %" PRIu64 " is not a multiple of 8", v);
		if (v < c->corrupt_at)
			return snprintf(buf, len,
					"producer index %" PRIu64 " is behind the consumer's read position %" PRIu64,
					v, c->corrupt_at);
		return snprintf(buf, len,
				"producer index %" PRIu64 " is more than the ring's %" PRIu64
				" bytes ahead of the consumer index %" PRIu64, v, c->size, l);
	case MR_CORRUPT_SIZE:
		if (v & (MR_REC_ALIGN - 1))
			return snprintf(buf, len, "%s: size %" PRIu64 " is not a multiple of 8", at, v);
		if (v < 8)
			return snprintf(buf, len, "%s: size %" PRIu64 " is below 8", at, v);
		return snprintf(buf, len,
				"%s: size %" PRIu64 " runs past the %" PRIu64
				" bytes before the producer index or the ring's end", at, v, l);
	case MR_CORRUPT_FLAGS:
		return snprintf(buf, len, "%s: flags 0x%" PRIx64 " has bits outside the known 0x%" PRIx64, at, v,
				l);
	case MR_CORRUPT_PAD:
		return snprintf(buf, len,
				"%s: pad record of size %" PRIu64 " does not end at the ring's end (%" PRIu64
				" bytes left)", at, v, l);
	case MR_CORRUPT_SHORT:
		return snprintf(buf, len,
				"%s: frame record of size %" PRIu64 " is shorter than its %" PRIu64
				"-byte header, or cut by the ring's end or the producer index", at, v, l);
	case MR_CORRUPT_CAP_LEN:
		return snprintf(buf, len, "%s: cap_len %" PRIu64 " exceeds the ring's max_frame %" PRIu64, at, v,
				l);
	case MR_CORRUPT_WIRE_LEN:
		return snprintf(buf, len, "%s: wire_len %" PRIu64 " is below cap_len %" PRIu64, at, v, l);
	case MR_CORRUPT_STRIDE:
		return snprintf(buf, len,
				"%s: size %" PRIu64 " is not the header plus cap_len rounded up to 8 (%" PRIu64 ")",
				at, v, l);
	case MR_CORRUPT_TRUNCATED:
		return snprintf(buf, len,
				"%s: the TRUNCATED flag is %s but cap_len %" PRIu64 " %s wire_len %" PRIu64, at,
				v < l ? "clear" : "set", v, v < l ? "<" : "==", l);
	}
	return snprintf(buf, len, "%s: unknown reason %u", at, c->corrupt_why);
}

void mr_ring__counters(const struct mr_ring_hdr *hc, struct mr_ring_counters *o)
{
	struct mr_ring_hdr *h = (struct mr_ring_hdr *)hc;
#define LD(f) atomic_load_explicit(&h->f, memory_order_relaxed)
	o->pushed_pkts = LD(pushed_pkts);
	o->pushed_bytes = LD(pushed_bytes);
	o->drop_full_pkts = LD(drop_full_pkts);
	o->drop_full_bytes = LD(drop_full_bytes);
	o->truncated_pkts = LD(truncated_pkts);
	o->wakeups = LD(wakeups);
	o->consumed_pkts = LD(consumed_pkts);
	o->consumed_bytes = LD(consumed_bytes);
	o->corrupt_events = LD(corrupt_events);
	o->corrupt_bytes = LD(corrupt_bytes);
	o->attaches = LD(attaches);
	o->prod = LD(prod);
	o->cons = LD(cons);
#undef LD
	o->data_size = h->data_size;
	o->max_frame = h->max_frame;
	o->producer_pid = h->producer_pid;
	o->producer_eventfd = h->producer_eventfd;
}
