"""What the daemon says of itself: the status snapshot, readiness, liveness, the heartbeat.

``Health`` reads the service's state (``ServiceState``, owned and changed by the app),
the session table and the ring registry; it changes nothing but the heartbeat's time
and the sessions' noted errnos.  The control socket's ``status``, ``/metrics`` (one
snapshot per scrape), ``/healthz``, ``/readyz`` and systemd's STATUS= all come from here,
so they agree.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import Iterator
from typing import Any

from mirrord.config import Config
from mirrord.daemon.rings import STALL, RingRegistry
from mirrord.sdnotify import Notifier
from mirrord.daemon.sessions import SessionTable
from mirrord.protocol import read_statuses

log = logging.getLogger("mirrord")

BEAT = 0.5             # heartbeat: liveness, WATCHDOG=1 and STATUS= come from this task


@dataclasses.dataclass
class ServiceState:
    """The service's own state, beside its sessions and rings."""

    config: Config
    generation: int = 1
    # this daemon process: a restarted daemon starts again at generation 1, so a
    # producer follows (instance, generation)
    instance: str = dataclasses.field(default_factory=lambda: secrets.token_hex(8))
    last_reload_ok: bool = True
    last_reload_error: str | None = None
    applied: bool = False    # the config is applied and the outputs were tried
    stopping: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    started: float = dataclasses.field(default_factory=time.monotonic)
    last_beat: float = dataclasses.field(default_factory=time.monotonic)
    tasks: list[asyncio.Task[Any]] = dataclasses.field(default_factory=list)


class Health:
    def __init__(self, state: ServiceState, sessions: SessionTable, rings: RingRegistry) -> None:
        self.state = state
        self.sessions = sessions
        self.rings = rings

    # ------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        for st in self._status(chunk=0):
            if st is not None:
                return st
        raise AssertionError("unreachable")  # pragma: no cover

    async def status_async(self, chunk: int = 500) -> dict[str, Any]:
        """The same snapshot as ``status()``, for the control socket: the session rows are
        built ``chunk`` at a time with the event loop turning in between, so that a status
        of thousands of sessions does not hold the drains up for its whole duration."""
        for st in self._status(chunk):
            if st is not None:
                return st
            await asyncio.sleep(0)
        raise AssertionError("unreachable")  # pragma: no cover

    def _status(self, chunk: int) -> Iterator[dict[str, Any] | None]:
        """Yields None after every ``chunk`` sessions (0: never), then the status.  The
        counters, the session list and the readiness are taken at the start."""
        tables = self.rings.tables()
        self.sessions.note_errno(tables)
        counters = self.sessions.counters(tables)
        ready, why = self.readiness()
        s = self.state
        head = {
            "ready": ready,
            "not_ready": why["reasons"],
            "instance": s.instance,
            "generation": s.generation,
            "last_reload_ok": s.last_reload_ok,
            "last_reload_error": s.last_reload_error,
            "config": s.config.source,
        }
        rows = []
        for n, sess in enumerate(list(self.sessions), 1):
            rows.append(sess.status(counters[sess.name]))
            if chunk and n % chunk == 0:
                yield None
        yield {
            **head,
            "uptime_s": round(time.monotonic() - s.started, 3),
            "sessions": rows,
            "rings": [r.status() for r in self.rings],
            "forwarders": read_statuses(s.config.daemon.runtime_dir),
            "ring_errors": dict(self.rings.ring_errors),
            "coalescing": self.rings.coalescing(),
        }

    # ------------------------------------------------------------ probes
    def health(self) -> tuple[bool, dict[str, Any]]:
        """Liveness: the loop turns, the daemon's tasks run, no ring is left undrained."""
        now = time.monotonic()
        problems = []
        lag = now - self.state.last_beat
        if lag > STALL:
            problems.append(f"event loop stalled: no heartbeat for {lag:.1f}s")
        for t in self.state.tasks:
            if t.done():
                exc = None if t.cancelled() else t.exception()
                problems.append(f"task {t.get_name()} ended: {exc!r}" if exc else f"task {t.get_name()} ended")
        for r in self.rings:
            idle = r.stalled(now)
            if idle:
                problems.append(f"ring {r.name}: records waiting, not drained for {idle:.1f}s")
        body: dict[str, Any] = {"status": "ok" if not problems else "fail", "problems": problems,
                                "rings": len(self.rings), "uptime_s": round(now - self.state.started, 3)}
        return not problems, body

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready: config applied, every session's output open, at least one ring attached."""
        s = self.state
        reasons = []
        sessions: dict[str, str] = {}
        if s.stopping.is_set():
            reasons.append("stopping")
        if not s.applied:
            reasons.append("config not applied yet")
        for sess in self.sessions:
            sink = sess.sink
            if sink.is_open:
                sessions[sess.name] = "ok"
            else:
                why = f"output {sess.output.type} {sess.output.name}: {sink.error}"
                sessions[sess.name] = why
                reasons.append(f'session "{sess.name}": {why}')
        if not len(self.rings):
            reasons.append(f"no ring attached (runtime_dir {s.config.daemon.runtime_dir})")
        body = {"status": "ready" if not reasons else "not ready", "reasons": reasons,
                "sessions": sessions, "rings": len(self.rings), "generation": s.generation,
                "last_reload_ok": s.last_reload_ok}
        if s.last_reload_error:
            body["last_reload_error"] = s.last_reload_error
        return not reasons, body

    def summary(self) -> str:
        """One line for systemd's STATUS= (shown by systemctl status)."""
        c = self.sessions.counters(self.rings.tables()).values()
        n = len(self.sessions)
        open_ = sum(1 for s in self.sessions if s.sink.is_open)
        dropped = sum(x.dropped_no_output + x.dropped_sink_busy + x.dropped_sink_error + x.dropped_not_ip
                      for x in c)
        ring_full = sum(r.consumer.counters().dropped_ring_full_packets for r in self.rings)
        return (f"{n} sessions, outputs open {open_}/{n}, "
                f"{len(self.rings)} rings; mirrored {sum(x.mirrored_packets for x in c)}, "
                f"dropped {dropped} at outputs, {ring_full} ring_full")

    async def heartbeat(self, notifier: Notifier) -> None:
        """Feeds liveness and systemd's watchdog from the event loop itself: if the loop
        stalls, no WATCHDOG=1 goes out and systemd restarts the daemon.  An unhealthy daemon
        (a task died, a ring is not drained) also stops feeding it."""
        n = notifier
        last_ping = last_status = 0.0
        while True:
            now = self.state.last_beat = time.monotonic()
            if n.watchdog_s is not None and now - last_ping >= n.watchdog_s:
                ok, body = self.health()
                if ok:
                    n.watchdog()
                    last_ping = now
                else:
                    log.error("event=watchdog_withheld problems=%r", body["problems"])
            if n.enabled and now - last_status >= 5.0:
                n.status(self.summary())
                last_status = now
            await asyncio.sleep(BEAT)
