/* SPDX-License-Identifier: MIT */
/* The SIGBUS guard for ring mappings someone else can shrink; see mirrord/guard.h. */
#define _GNU_SOURCE
#include "mirrord/guard.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

/*
 * A fixed table, so that the handler allocates nothing and takes no lock.  A slot is
 * FREE, CLAIMED (being filled in; the handler skips it) or LIVE.  Ring mappings are
 * registered by their owner right after mmap and removed right before munmap, so a
 * fault inside a live slot's range is a fault in that ring.
 */
#define MR_GUARD_SLOTS 4096
enum { GUARD_FREE = 0, GUARD_CLAIMED, GUARD_LIVE };

struct guard_slot {
	_Atomic uint32_t state;
	_Atomic uint32_t lost;   /* set once, by the handler */
	_Atomic uintptr_t base;
	_Atomic size_t len;
};

static struct guard_slot guard_slots[MR_GUARD_SLOTS];
static _Atomic unsigned guard_used;      /* slots [0, guard_used) were ever claimed */
static _Atomic int guard_chaining;       /* inside the previous handler: do not recurse
					  * (relaxed: a flag, no data hangs on it; a second
					  * thread chaining meanwhile takes the default action,
					  * as a re-entry does) */
static struct sigaction guard_prev;      /* SIGBUS action before ours */
static pthread_mutex_t guard_lock = PTHREAD_MUTEX_INITIALIZER;

/* Not ours: hand the signal to the previous handler, or take the default action. */
static void guard_chain(int sig, siginfo_t *si, void *uc)
{
	const struct sigaction *p = &guard_prev;
	int sent = si->si_code <= 0; /* kill(2)/raise(3), not a fault */

	if (p->sa_handler != SIG_DFL && p->sa_handler != SIG_IGN &&
	    !atomic_exchange_explicit(&guard_chaining, 1, memory_order_relaxed)) {
		/* Python's faulthandler, for one: it dumps the tracebacks, restores its own
		 * previous action and raises the signal again (we set SA_NODEFER, so that
		 * raise is delivered at once) */
		if (p->sa_flags & SA_SIGINFO)
			p->sa_sigaction(sig, si, uc);
		else
			p->sa_handler(sig);
		atomic_store_explicit(&guard_chaining, 0, memory_order_relaxed);
		return;
	}
	if (p->sa_handler == SIG_IGN && sent)
		return;
	/* the default action: die of this very signal.  A fault is not re-raised: returning
	 * runs the access again, which faults into SIG_DFL with the real address in the
	 * core.  (A synchronous SIGBUS cannot be ignored: the kernel forces SIG_DFL.) */
	struct sigaction dfl;
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	sigaction(sig, &dfl, NULL);
	if (sent)
		raise(sig);
}

static void guard_handler(int sig, siginfo_t *si, void *uc)
{
	int saved = errno;
	uintptr_t a = (uintptr_t)si->si_addr;
	/* acquire: pairs with the release store of guard_used in mr_guard__add() */
	unsigned n = atomic_load_explicit(&guard_used, memory_order_acquire);

	if (si->si_code > 0) {
		for (unsigned i = 0; i < n && i < MR_GUARD_SLOTS; i++) {
			struct guard_slot *g = &guard_slots[i];
			/* acquire: base and len are those stored before the slot went live;
			 * pairs with the release store of GUARD_LIVE in mr_guard__add() */
			if (atomic_load_explicit(&g->state, memory_order_acquire) != GUARD_LIVE)
				continue;
			uintptr_t b = atomic_load_explicit(&g->base, memory_order_relaxed);
			size_t l = atomic_load_explicit(&g->len, memory_order_relaxed);
			if (a - b >= l)
				continue;
			/* the whole mapping, at once: every later access of either side reads
			 * zeros instead of faulting page by page */
			if (mmap((void *)b, l, PROT_READ | PROT_WRITE,
				 MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED)
				break; /* cannot repair it: not survivable, chain */
			/* release: the replacement is in place before anyone acts on the flag;
			 * pairs with the acquire load in mr_guard__lost() */
			atomic_store_explicit(&g->lost, 1, memory_order_release);
			errno = saved;
			return;
		}
	}
	guard_chain(sig, si, uc);
	errno = saved;
}

/* Ours on top: installed at the first registration and again whenever someone (Python's
 * faulthandler.enable(), say) installed another handler since, which we then chain to. */
static int guard_install(void)
{
	struct sigaction cur, sa;
	if (sigaction(SIGBUS, NULL, &cur) < 0)
		return -errno;
	if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == guard_handler)
		return 0;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = guard_handler;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	guard_prev = cur;
	if (sigaction(SIGBUS, &sa, NULL) < 0)
		return -errno;
	return 0;
}

int mr_guard__add(void *addr, size_t len)
{
	pthread_mutex_lock(&guard_lock);
	int rc = guard_install();
	if (rc) {
		pthread_mutex_unlock(&guard_lock);
		return rc;
	}
	rc = -ENOSPC;
	for (unsigned i = 0; i < MR_GUARD_SLOTS; i++) {
		struct guard_slot *g = &guard_slots[i];
		uint32_t free_ = GUARD_FREE;
		if (!atomic_compare_exchange_strong_explicit(&g->state, &free_, GUARD_CLAIMED,
							     memory_order_relaxed, memory_order_relaxed))
			continue;
		atomic_store_explicit(&g->base, (uintptr_t)addr, memory_order_relaxed);
		atomic_store_explicit(&g->len, len, memory_order_relaxed);
		atomic_store_explicit(&g->lost, 0, memory_order_relaxed);
		if (atomic_load_explicit(&guard_used, memory_order_relaxed) <= i)
			/* release: pairs with the acquire load in guard_handler() */
			atomic_store_explicit(&guard_used, i + 1, memory_order_release);
		/* release: base, len and lost before the slot goes live; pairs with the
		 * acquire load of state in guard_handler() */
		atomic_store_explicit(&g->state, GUARD_LIVE, memory_order_release);
		rc = (int)i;
		break;
	}
	pthread_mutex_unlock(&guard_lock);
	return rc;
}

void mr_guard__remove(int slot)
{
	if (slot < 0 || slot >= MR_GUARD_SLOTS)
		return;
	/* release: pairs with the acquire load of state in guard_handler(), which skips a
	 * slot it sees FREE; the owner unmaps the range only after this store */
	atomic_store_explicit(&guard_slots[slot].state, GUARD_FREE, memory_order_release);
}

int mr_guard__lost(int slot)
{
	if (slot < 0 || slot >= MR_GUARD_SLOTS)
		return 0;
	/* acquire: pairs with the release store in guard_handler() */
	return (int)atomic_load_explicit(&guard_slots[slot].lost, memory_order_acquire);
}
