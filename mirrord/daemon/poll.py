"""Wake coalescing: the rings the daemon polls on one shared timer instead of sleeping on
their eventfds, NAPI-style.

A ring reader woken by its eventfd drains; when it finds less than a budget it does not
re-arm ``need_wakeup`` at once (that would cost the producer an eventfd write, and the
daemon a loop wake and a drain call, for every small batch).  It joins the poll set and
leaves ``need_wakeup`` clear, so the producer writes no eventfd.  One timerfd serves the
whole set: each tick drains every ring of it in one C call (``mr_cons__drain_set``), and
Python looks at a ring only when that call says so (lost, a full budget, a corruption
event, or idle).  The delay before the next tick adapts:

- a tick that took ``HEAVY`` records or more, or a ring that filled its budget: the next
  tick comes at once (delay 0, as busy as today's reader);
- otherwise it doubles, from ``MIN_STEP_NS`` up to ``[daemon] max_delay_us``: light traffic
  is gathered into fewer, larger drains, and a copy waits at most that long for its turn.

A ring that found no record for ``IDLE_NS`` goes back to sleep with the usual protocol: set
``need_wakeup``, then look at the ring again (``mr_cons__prepare_sleep``: the lost-wake-up
check), and only then leave the set; if records came meanwhile it stays.  So a producer
still wakes a sleeping consumer: the ring protocol is unchanged (docs/ring-abi.md, section 7).
``max_delay_us = 0`` turns this off: every drain that finds less than a budget re-arms at
once, as before.
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from mirrord.ring import DrainSet, TimerFd

if TYPE_CHECKING:
    from mirrord.daemon.rings import RingReader

MIN_STEP_NS = 20_000       # the first delay after a tick that found little
IDLE_NS = 50_000_000       # no record for this long: the ring re-arms need_wakeup and sleeps


class Poller:
    """The poll set of one event loop's ring readers and its one timer."""

    def __init__(self, max_delay_us: int, budget: int) -> None:
        self.max_ns = max_delay_us * 1000
        self.budget = budget
        self.heavy = budget // 2
        self.loop = asyncio.get_running_loop()
        self.members: dict[tuple[int, int], RingReader] = {}
        self._set: DrainSet | None = None  # None: rebuild from members at the next tick
        self._order: list[RingReader] = []
        self.timer = TimerFd()
        self.loop.add_reader(self.timer.fd, self._on_timer)
        self.delay_ns = 0
        self._pending = False  # a tick is due (timer armed or call_soon queued)
        self.last_tick = time.monotonic()
        self.ticks = 0
        self.records = 0  # taken by ticks
        self.sleeps = 0   # rings that went back to sleep on their eventfd

    def park(self, r: RingReader) -> None:
        """r drained less than a budget: poll it with the others, need_wakeup left clear."""
        if r.key not in self.members:
            self.members[r.key] = r
            self._set = None
            r.polled = True
        if not self._pending:
            self._arm(max(self.delay_ns, MIN_STEP_NS))

    def forget(self, r: RingReader) -> None:
        """r is closing (detached, lost): out of the set."""
        if self.members.pop(r.key, None) is not None:
            self._set = None
        r.polled = False

    def invalidate(self) -> None:
        """Route tables were replaced: the set is rebuilt at the next tick."""
        self._set = None

    def _arm(self, delay_ns: int) -> None:
        self._pending = True
        if delay_ns <= 0:
            self.loop.call_soon(self._tick)
        else:
            self.timer.arm(delay_ns)

    def _on_timer(self) -> None:
        self.timer.clear()
        self._tick()

    def _tick(self) -> None:
        self._pending = False
        if not self.members:
            self.delay_ns = 0
            return
        if self._set is None:
            self._order = list(self.members.values())
            self._set = DrainSet([(r.consumer, r.routes) for r in self._order], time.monotonic_ns())
        now = time.monotonic_ns()
        total, look = self._set.drain(self.budget, now, IDLE_NS)
        self.last_tick = time.monotonic()
        self.ticks += 1
        self.records += total
        full = self._look(now) if look else False
        if full or total >= self.heavy:
            self.delay_ns = 0
        else:
            self.delay_ns = min(self.max_ns, max(MIN_STEP_NS, self.delay_ns * 2))
        if self.members:
            self._arm(self.delay_ns)

    def _look(self, now: int) -> bool:
        """The rings the drain flagged: lost ones detached, corruption logged, idle ones
        put to sleep (or kept, when records came as need_wakeup was set).  True if a ring
        filled its budget."""
        s = self._set
        assert s is not None
        full = False
        for i, r in enumerate(self._order):
            res, busy, corrupt = s.result(i)
            if r.closed or r.key not in self.members:
                continue
            if res < 0 or r.consumer.lost:
                r.on_lost(r)  # detaches: forget() drops it from the set
                continue
            t = r.consumer.totals.corrupt
            if t != corrupt:
                r.log_corruption()
                s.seen(i, corrupt=t)
            if res >= self.budget:
                full = True
            elif now - busy >= IDLE_NS:
                if r.consumer.prepare_sleep():
                    self.members.pop(r.key, None)
                    r.polled = False
                    self._set = None
                    self.sleeps += 1
                else:
                    s.seen(i, busy_ns=now)  # records came as it was going to sleep: stay
        return full

    def status(self) -> dict[str, Any]:
        return {"max_delay_us": self.max_ns // 1000, "delay_us": self.delay_ns // 1000,
                "polled_rings": len(self.members), "ticks": self.ticks, "records": self.records,
                "sleeps": self.sleeps}

    def close(self) -> None:
        if self.timer.fd >= 0:
            self.loop.remove_reader(self.timer.fd)
            self.timer.close()
        for r in self.members.values():
            r.polled = False
        self.members.clear()
        self._set = None
