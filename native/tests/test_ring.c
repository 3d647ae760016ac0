/* SPDX-License-Identifier: MIT */
/*
 * C tests of the mirror ring, built by tests/unit/test_ring_native.py twice: with
 * -fsanitize=address,undefined (every test) and with -fsanitize=thread (the two-thread
 * stress).  Usage: test_ring [all|stress] [records]
 */
#define _GNU_SOURCE
#include "mirrord/drain.h"
#include "mirrord/ring.h"

#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "check.h"
#define CHECK(cond, ...) CHECK_THEN(return, cond, __VA_ARGS__)

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
	uint64_t x = rng_state;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return rng_state = x;
}

/* payload byte i of the copy with sequence number seq */
static inline uint8_t pat(uint64_t seq, uint32_t i)
{
	return (uint8_t)(seq * 31 + i);
}

static void fill(uint8_t *buf, uint64_t seq, uint32_t len)
{
	for (uint32_t i = 0; i < len; i++)
		buf[i] = pat(seq, i);
}

static int check_payload(const struct mr_frame *f)
{
	for (uint32_t i = 0; i < f->cap_len; i++)
		if (f->data[i] != pat(f->seq, i))
			return 0;
	return 1;
}

static void make(struct mr_prod *p, struct mr_cons *c, uint32_t size, uint32_t max_frame)
{
	char err[256];
	int rc = mr_prod__create(p, NULL, size, max_frame, "test", err, sizeof(err));
	if (rc) {
		fprintf(stderr, "create: %s\n", err);
		exit(2);
	}
	rc = mr_cons__attach(c, p->fd, p->efd, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "attach: %s\n", err);
		exit(2);
	}
}

static void teardown(struct mr_prod *p, struct mr_cons *c)
{
	mr_cons__detach(c);
	mr_prod__destroy(p, 1);
}

/* geometry errors name the parameter */
static void test_create_errors(void)
{
	struct mr_prod p;
	char err[256];
	CHECK(mr_prod__create(&p, NULL, 100000, 0, "", err, sizeof(err)) == -EINVAL, "not pow2");
	CHECK(strstr(err, "data_size 100000") != NULL, "%s", err);
	CHECK(mr_prod__create(&p, NULL, 1u << 31, 0, "", err, sizeof(err)) == -EINVAL, "too big");
	CHECK(mr_prod__create(&p, NULL, 0, 10, "", err, sizeof(err)) == -EINVAL, "frame");
	CHECK(strstr(err, "max_frame 10") != NULL, "%s", err);
	CHECK(mr_prod__create(&p, NULL, 1u << 16, 65535, "", err, sizeof(err)) == -EINVAL,
	      "record must fit four times");
}

/* attaching to something else fails with a message, never a crash */
static void test_attach_errors(void)
{
	struct mr_prod p;
	struct mr_cons c;
	char err[256];
	make(&p, &c, 1u << 16, 0);
	mr_cons__detach(&c);

	/* a copy of the ring with one field changed at a time */
	size_t len = p.map_len;
	struct {
		size_t off;
		uint32_t val;
		const char *msg;
	} cases[] = {
		{0, 0x12345678, "magic"},
		{8, 2, "ABI version 2"},
		{12, 2048, "header size 2048"},
		{16, 1u << 17, "declares 135168"},
		{20, 1u << 20, "invalid"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int fd = memfd_create("bad", MFD_CLOEXEC);
		uint8_t *buf = malloc(len);
		memcpy(buf, p.hdr, len);
		memcpy(buf + cases[i].off, &cases[i].val, 4);
		CHECK(write(fd, buf, len) == (ssize_t)len, "write");
		free(buf);
		err[0] = 0;
		int rc = mr_cons__attach(&c, fd, -2, err, sizeof(err));
		close(fd);
		CHECK(rc == -EPROTO, "case %zu rc %d (%s)", i, rc, err);
		CHECK(strstr(err, cases[i].msg) != NULL, "case %zu: '%s' lacks '%s'", i, err, cases[i].msg);
	}
	/* too short */
	int fd = memfd_create("short", MFD_CLOEXEC);
	CHECK(write(fd, "MRR", 3) == 3, "write");
	CHECK(mr_cons__attach(&c, fd, -2, err, sizeof(err)) == -EPROTO, "short file");
	close(fd);
	mr_prod__destroy(&p, 1);
}

/* random pushes and drains against a model queue: wrap-around, full ring, jumbo, truncation */
static void test_model(void)
{
	struct mr_prod p;
	struct mr_cons c;
	make(&p, &c, 1u << 16, 9216);
	static uint8_t buf[12000];
	enum { QN = 1 << 16 };
	static uint64_t q_seq[QN];
	static uint32_t q_len[QN], q_wire[QN];
	uint64_t qh = 0, qt = 0, offered = 0, dropped = 0;

	for (int step = 0; step < 200000; step++) {
		/* alternate push-heavy and drain-heavy phases to reach both full and empty */
		int push_heavy = (step / 5000) % 2;
		if (rnd() % 4 < (push_heavy ? 3u : 1u)) {
			uint32_t len;
			uint64_t r = rnd() % 100;
			len = r < 60 ? 60 + rnd() % 100 : r < 95 ? 60 + rnd() % 1455 : 9000 + rnd() % 2000;
			fill(buf, offered, len);
			struct mr_meta m = {.ifindex = 7, .session_id = 3, .ts_ns = offered};
			int rc = mr_prod__push(&p, buf, len, &m);
			if (rc == 0) {
				q_seq[qt % QN] = offered;
				q_len[qt % QN] = len > 9216 ? 9216 : len;
				q_wire[qt % QN] = len;
				qt++;
			} else {
				CHECK(rc == -ENOBUFS, "rc %d", rc);
				dropped++;
			}
			offered++;
		} else {
			unsigned budget = 1 + rnd() % 8;
			struct mr_frame f;
			for (unsigned i = 0; i < budget; i++) {
				int r = mr_cons__next(&c, &f);
				CHECK(r >= 0, "corrupt at step %d", step);
				if (!r) {
					CHECK(qh == qt, "empty but %" PRIu64 " expected", qt - qh);
					break;
				}
				CHECK(qh < qt, "record beyond model");
				CHECK(f.seq == q_seq[qh % QN], "seq %" PRIu64 " want %" PRIu64, f.seq, q_seq[qh % QN]);
				CHECK(f.cap_len == q_len[qh % QN] && f.wire_len == q_wire[qh % QN], "len");
				CHECK(!!(f.flags & MR_REC_F_TRUNCATED) == (f.cap_len < f.wire_len), "flag");
				CHECK(f.ifindex == 7 && f.session_id == 3 && f.ts_ns == f.seq, "meta");
				CHECK(check_payload(&f), "payload of seq %" PRIu64, f.seq);
				qh++;
			}
			mr_cons__release(&c);
		}
	}
	struct mr_ring_counters k;
	mr_ring__counters(p.hdr, &k);
	CHECK(k.pushed_pkts + k.drop_full_pkts == offered, "conservation");
	CHECK(k.drop_full_pkts == dropped && dropped > 0, "drops %" PRIu64, dropped);
	CHECK(k.consumed_pkts == qh, "consumed");
	CHECK(k.truncated_pkts > 0, "some jumbo > 9216 were truncated");
	CHECK(k.corrupt_events == 0, "no corruption");
	teardown(&p, &c);
}

/* scribble over indices and data; the consumer must report it, recover, stay in bounds */
static void test_corruption(void)
{
	struct mr_prod p;
	struct mr_cons c;
	make(&p, &c, 1u << 16, 2048);
	uint8_t buf[2048];
	uint64_t seq = 0;
	struct mr_frame f;

	for (int round = 0; round < 2000; round++) {
		/* fill partly */
		int n = 1 + (int)(rnd() % 200);
		for (int i = 0; i < n; i++) {
			uint32_t len = 60 + (uint32_t)(rnd() % 1500);
			fill(buf, seq, len);
			mr_prod__push(&p, buf, len, NULL);
			seq++;
		}
		/* scribble */
		uint8_t *base = (uint8_t *)p.hdr;
		int what = (int)(rnd() % 4);
		if (what == 0) { /* random bytes over the data area */
			for (int i = 0; i < 16; i++)
				base[MR_RING_HDR_SIZE + rnd() % p.size] = (uint8_t)rnd();
		} else if (what == 1) { /* garbage producer index */
			atomic_store(&p.hdr->prod, rnd());
		} else if (what == 2) { /* garbage consumer index */
			atomic_store(&p.hdr->cons, rnd());
		} else { /* a whole record header */
			uint64_t off = (rnd() % p.size) & ~7ull;
			for (int i = 0; i < 40 && off + i < p.size; i++)
				base[MR_RING_HDR_SIZE + off + i] = (uint8_t)rnd();
		}
		/* drain: anything returned must be in bounds (ASan checks the reads) */
		for (int i = 0; i < 400; i++) {
			int r = mr_cons__next(&c, &f);
			if (r == 0)
				break;
			if (r > 0) {
				CHECK(f.data >= c.data && f.data + f.cap_len <= c.data + c.size, "bounds");
				volatile uint8_t s = 0;
				for (uint32_t j = 0; j < f.cap_len; j++)
					s ^= f.data[j];
				(void)s;
			}
		}
		mr_cons__release(&c);
		(void)mr_cons__prepare_sleep(&c);
	}
	struct mr_ring_counters k;
	mr_ring__counters(p.hdr, &k);
	CHECK(k.corrupt_events > 0, "corruption must be noticed");
	CHECK(k.pushed_pkts + k.drop_full_pkts == seq, "producer accounting survives");

	/* recovery: drain what is left, then clean traffic must flow byte-identical */
	for (int i = 0; i < 4; i++) {
		while (mr_cons__next(&c, &f) != 0)
			;
		mr_cons__release(&c);
		mr_prod__push(&p, buf, 64, NULL); /* heals a scribbled prod/cons */
		seq++;
	}
	while (mr_cons__next(&c, &f) != 0)
		;
	mr_cons__release(&c);
	uint64_t corrupt_before = c.corrupt_events;
	uint64_t first = seq;
	for (int i = 0; i < 100; i++, seq++) {
		fill(buf, seq, 100 + i);
		CHECK(mr_prod__push(&p, buf, 100 + (uint32_t)i, NULL) == 0, "push after recovery %d", i);
	}
	for (int i = 0; i < 100; i++) {
		CHECK(mr_cons__next(&c, &f) == 1, "record %d after recovery", i);
		CHECK(f.seq == first + (uint64_t)i && f.cap_len == 100u + (uint32_t)i && check_payload(&f),
		      "record %d intact", i);
	}
	CHECK(mr_cons__next(&c, &f) == 0, "nothing more");
	CHECK(c.corrupt_events == corrupt_before, "no corruption after recovery");
	teardown(&p, &c);
}

/* A writer flips a record header between a valid small record and a huge one while the
 * consumer reads it again and again: the consumer must act on one snapshot only (no
 * double fetch), so it never returns more bytes than the record it validated. */
struct flip {
	uint64_t *rec;
	uint64_t a[5], b[5];
	_Atomic int stop;
};

static void *flipper(void *arg)
{
	struct flip *fl = arg;
	while (!atomic_load_explicit(&fl->stop, memory_order_relaxed))
		for (int s = 0; s < 2; s++)
			for (int i = 0; i < 5; i++)
				__atomic_store_n(&fl->rec[i], s ? fl->b[i] : fl->a[i], __ATOMIC_RELAXED);
	return NULL;
}

static void test_double_fetch(void)
{
	struct mr_prod p;
	struct mr_cons c;
	make(&p, &c, 1u << 16, 9216);
	uint8_t small[8] = {0};
	CHECK(mr_prod__push(&p, small, 8, NULL) == 0, "push");
	struct flip fl = {.rec = (uint64_t *)p.data};
	memcpy(fl.a, p.data, 40);
	struct mr_rec big = {.size = 9256, .cap_len = 9216, .wire_len = 9216};
	memcpy(fl.b, &big, 40);
	pthread_t t;
	pthread_create(&t, NULL, flipper, &fl);
	int ok = 0, bad = 0;
	for (int i = 0; i < 200000; i++) {
		struct mr_frame f;
		c.pos = c.cons = c.cached_prod = 0; /* read the same record again */
		int r = mr_cons__next(&c, &f);
		if (r == 1) {
			ok++;
			if (f.cap_len != 8 || c.pos != 48)
				bad++;
		}
	}
	atomic_store(&fl.stop, 1);
	pthread_join(t, NULL);
	CHECK(bad == 0, "%d of %d reads acted on a header they did not validate", bad, ok);
	teardown(&p, &c);
}

/* ---- two threads: sequence numbers and payloads, eventfd wake-ups ---- */

struct stress {
	struct mr_prod p;
	struct mr_cons c;
	uint64_t records;
	_Atomic int done;
	uint64_t got, bad, gaps_ok, lost_wakeups, sleeps;
};

static void *producer(void *arg)
{
	struct stress *s = arg;
	static uint8_t buf[9216];
	for (uint64_t seq = 0; seq < s->records; seq++) {
		uint32_t len = (seq % 1000 == 999) ? 9216 : 60 + (uint32_t)(seq % 200);
		fill(buf, seq, len);
		struct mr_meta m = {.ts_ns = seq};
		mr_prod__push(&s->p, buf, len, &m);
		if ((seq & 0xfffff) == 0)
			usleep(2000); /* let the consumer catch up and sleep now and then */
	}
	atomic_store_explicit(&s->done, 1, memory_order_release);
	/* one more kick so a sleeping consumer sees the end (an empty submit does nothing) */
	mr_prod__kick(&s->p);
	return NULL;
}

static void check_one(struct stress *s, const struct mr_frame *f, int64_t *expect)
{
	if ((int64_t)f->seq < *expect || !check_payload(f) || f->ts_ns != f->seq)
		s->bad++;
	*expect = (int64_t)f->seq + 1;
	s->got++;
}

static void *consumer(void *arg)
{
	struct stress *s = arg;
	struct mr_frame f;
	int64_t expect = 0;
	for (;;) {
		int r = mr_cons__next(&s->c, &f);
		if (r > 0) {
			check_one(s, &f, &expect);
			if (s->got % 64 == 0)
				mr_cons__release(&s->c);
			continue;
		}
		if (r < 0) {
			s->bad++;
			continue;
		}
		mr_cons__release(&s->c);
		if (atomic_load_explicit(&s->done, memory_order_acquire)) {
			/* everything pushed is visible now: take the rest and stop */
			while ((r = mr_cons__next(&s->c, &f)) > 0)
				check_one(s, &f, &expect);
			s->bad += r < 0;
			break;
		}
		if (mr_cons__prepare_sleep(&s->c)) {
			struct pollfd pfd = {.fd = s->c.efd, .events = POLLIN};
			s->sleeps++;
			int pr = poll(&pfd, 1, 2000);
			if (pr == 0 && !atomic_load(&s->done))
				s->lost_wakeups++; /* producer kept going but never woke us */
			uint64_t v;
			if (read(s->c.efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
				s->bad++;
		}
	}
	mr_cons__release(&s->c);
	return NULL;
}

static void test_stress(uint64_t records)
{
	struct stress *s = calloc(1, sizeof(*s));
	s->records = records;
	make(&s->p, &s->c, 1u << 20, 9216);
	pthread_t tp, tc;
	pthread_create(&tc, NULL, consumer, s);
	pthread_create(&tp, NULL, producer, s);
	pthread_join(tp, NULL);
	pthread_join(tc, NULL);
	struct mr_ring_counters k;
	mr_ring__counters(s->p.hdr, &k);
	printf("stress: offered=%" PRIu64 " pushed=%" PRIu64 " dropped=%" PRIu64 " got=%" PRIu64
	       " sleeps=%" PRIu64 " wakeups=%" PRIu64 "\n",
	       records, k.pushed_pkts, k.drop_full_pkts, s->got, s->sleeps, k.wakeups);
	CHECK(s->bad == 0, "%" PRIu64 " bad records", s->bad);
	CHECK(s->lost_wakeups == 0, "%" PRIu64 " lost wake-ups", s->lost_wakeups);
	CHECK(k.pushed_pkts + k.drop_full_pkts == records, "conservation");
	CHECK(s->got == k.pushed_pkts && k.consumed_pkts == k.pushed_pkts, "every pushed record drained");
	CHECK(k.corrupt_events == 0, "no corruption");
	teardown(&s->p, &s->c);
	free(s);
}


/* A named ring truncated under both sides: no SIGBUS; both see it lost and say why. */
static void guard_case(const char *dir, off_t to)
{
	struct mr_prod p;
	struct mr_cons c;
	char err[256], path[512], why[256];
	snprintf(path, sizeof(path), "%s/t.ring", dir);
	int rc = mr_prod__create(&p, path, 1u << 16, 0, "guard", err, sizeof(err));
	CHECK(rc == 0, "create: %s", err);
	CHECK(p.guard != 0, "a named ring is guarded");
	rc = mr_cons__attach(&c, p.fd, -2, err, sizeof(err));
	CHECK(rc == 0, "attach: %s", err);
	CHECK(c.guard != 0, "an unsealed file is guarded on the consumer side too");
	uint8_t frame[1500];
	memset(frame, 0xab, sizeof(frame));
	struct mr_meta m = {0};
	for (int i = 0; i < 10; i++)
		CHECK(mr_prod__push(&p, frame, sizeof(frame), &m) == 0, "push %d", i);
	struct mr_route rt = {.session_id = 0, .fd = open("/dev/null", O_WRONLY | O_CLOEXEC), .mode = MR_DRAIN_WRITE};
	struct mr_drain_stats st = {0};
	struct mr_drain_totals tot = {0};
	CHECK(mr_cons__drain(&c, &rt, &st, 1, 4, &tot) == 4 && st.pkts == 4, "drain before");
	CHECK(!mr_prod__lost(&p) && !mr_cons__lost(&c), "not lost yet");

	CHECK(truncate(path, to) == 0, "truncate: %s", strerror(errno));
	/* the producer writes past the new end: the guard swaps in zero pages */
	for (int i = 0; i < 20; i++)
		mr_prod__push(&p, frame, sizeof(frame), &m);
	CHECK(mr_prod__lost(&p), "producer sees the ring lost");
	mr_prod__lost_reason(&p, why, sizeof(why));
	char want[128];
	snprintf(want, sizeof(want), "file truncated to %lld of %zu bytes", (long long)to, p.map_len);
	CHECK(strcmp(why, want) == 0, "'%s' != '%s'", why, want);
	/* the consumer reads past the new end (header too when truncated to 0) */
	rc = mr_cons__drain(&c, &rt, &st, 1, 64, &tot);
	CHECK(rc == -ENXIO, "drain after: %d", rc);
	CHECK(mr_cons__lost(&c), "consumer sees the ring lost");
	CHECK(tot.corrupt == 0, "a lost ring is not counted as corruption (%" PRIu64 ")", tot.corrupt);
	mr_cons__corruption(&c, why, sizeof(why));
	CHECK(why[0] == 0 && c.corrupt_events == 0, "no corruption recorded: '%s'", why);
	CHECK(mr_cons__drain(&c, &rt, &st, 1, 64, &tot) == -ENXIO, "stays lost");
	mr_cons__lost_reason(&c, why, sizeof(why));
	CHECK(strstr(why, "file truncated") != NULL, "%s", why);
	close(rt.fd);
	mr_cons__detach(&c);
	mr_prod__destroy(&p, 1);
	/* the slots are free again: a fresh ring is not lost */
	rc = mr_prod__create(&p, path, 1u << 16, 0, "guard", err, sizeof(err));
	CHECK(rc == 0 && !mr_prod__lost(&p), "fresh ring after a lost one");
	mr_prod__destroy(&p, 1);
}

static sigjmp_buf bus_jmp;
static void own_bus(int sig)
{
	(void)sig;
	siglongjmp(bus_jmp, 1);
}

/* A SIGBUS outside every guarded ring goes to the handler installed before ours. */
static int foreign_child(const char *dir)
{
	char err[256], path[512];
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = own_bus;
	sa.sa_flags = SA_NODEFER;
	sigaction(SIGBUS, &sa, NULL);
	struct mr_prod p;
	snprintf(path, sizeof(path), "%s/f.ring", dir);
	if (mr_prod__create(&p, path, 1u << 16, 0, "f", err, sizeof(err)))
		return 3;
	snprintf(path, sizeof(path), "%s/other", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, 8192))
		return 4;
	volatile uint8_t *m = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED || ftruncate(fd, 0))
		return 5;
	if (sigsetjmp(bus_jmp, 1)) {
		mr_prod__destroy(&p, 1);
		return mr_prod__lost(&p) ? 6 : 42; /* our ring untouched, the fault went to own_bus */
	}
	m[100] = 1;
	return 7; /* survived an unhandled fault */
}

static void test_guard(void)
{
	char dir[] = "/tmp/mr-guard-XXXXXX";
	CHECK(mkdtemp(dir) != NULL, "mkdtemp");
	guard_case(dir, 0);
	guard_case(dir, 4096);
	guard_case(dir, 8192);

	/* a sealed memfd needs no guard */
	struct mr_prod p;
	struct mr_cons c;
	make(&p, &c, 1u << 16, 0);
	CHECK(p.guard == 0 && c.guard == 0, "memfd: no guard (%d, %d)", p.guard, c.guard);
	teardown(&p, &c);

	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0)
		_exit(foreign_child(dir));
	int status = 0;
	CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 42, "foreign SIGBUS: status 0x%x", status);
	char path[512];
	snprintf(path, sizeof(path), "%s/other", dir);
	unlink(path);
	CHECK(rmdir(dir) == 0, "rmdir %s: %s", dir, strerror(errno));
}

int main(int argc, char **argv)
{
	const char *which = argc > 1 ? argv[1] : "all";
	uint64_t records = argc > 2 ? strtoull(argv[2], NULL, 0) : 2000000;
	if (!strcmp(which, "all")) {
		test_create_errors();
		test_attach_errors();
		test_model();
		test_corruption();
		test_double_fetch();
		test_guard();
	}
	test_stress(records);
	if (failures) {
		fprintf(stderr, "%d failure(s)\n", failures);
		return 1;
	}
	printf("ok\n");
	return 0;
}
