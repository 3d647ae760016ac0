"""The daemon: lifecycle, signals, outputs and reload, over the sessions and the rings.

Layering: the CLI loads a Config and hands it to ``Daemon``; ``Daemon.run()`` nests the
resources (link watcher, outputs, HTTP, control socket, tasks) so that teardown runs in
reverse order.  The parts it composes know nothing of it: the session table
(``sessions``), the ring registry (``rings``), the link watcher (``links``), the status
and probes (``health``), and the adapters (``control``, ``http``, ``metrics``,
``sdnotify``), each handed what it needs.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno as errnomod
import logging
import random
import resource
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from mirrord import config as cfgmod
from mirrord import rundir
from mirrord.config import Config, ConfigError, Session
from mirrord.daemon.control import ControlServer
from mirrord.daemon.health import Health, ServiceState
from mirrord.daemon.http import HttpServer
from mirrord.daemon.links import LinkEvent, link_socket, missing_inputs, watch_links
from mirrord.daemon.listeners import ListenerWatch
from mirrord.daemon.metrics import make_registry
from mirrord.daemon.rings import BUDGET, RingReader, RingRegistry
from mirrord.sdnotify import Notifier
from mirrord.daemon.sessions import SessionState, SessionTable
from mirrord.ring import Routes
from mirrord.sinks import Sink, close_fds, open_sinks, sink_for

log = logging.getLogger("mirrord")

TICK = 1.0             # housekeeping: stragglers, dead producers, new ring files
REOPEN_EVERY = 5.0     # first retry of an output that failed to open; doubles per failure ...
REOPEN_MAX = 60.0      # ... up to this, each delay jittered (x0.5-1.0) so retries spread out
STOP_DEADLINE = 2.0    # SIGTERM: drain what the rings hold for at most this long
FD_RESERVE = 64        # descriptors the clients' caps leave free (outputs, rings, netlink)
FD_PER_SESSION = 4     # and per session: its output, and the sockets of a reopen


class ReloadFailed(Exception):
    """The new config's outputs could not all be made ready; the running config stays."""


class Daemon:
    def __init__(self, config: Config, config_path: Path | None = None) -> None:
        self.config_path = config_path
        self.state = ServiceState(config)
        self.sessions = SessionTable(config.sessions)
        self.rings = RingRegistry(config.daemon, self.sessions.make_routes, self._fold)
        self.health = Health(self.state, self.sessions, self.rings)
        self.lock = asyncio.Lock()  # one reload or output (re)open at a time
        self.notifier = Notifier()
        self.registry = make_registry(self.health.status)
        self.listeners = ListenerWatch(self._listen_devices, self._on_listened)
        d = config.daemon
        self.client_caps = (d.control_max_connections, d.http_max_connections)  # see raise_nofile

    # what the control socket asks of the service (mirrord.daemon.control.Service)
    @property
    def config(self) -> Config:
        return self.state.config

    @property
    def generation(self) -> int:
        return self.state.generation

    @property
    def sinks(self) -> dict[str, Sink]:
        """Each session's output, by session name (a view, for tests and tools)."""
        return {s.name: s.sink for s in self.sessions}

    def status(self) -> dict[str, Any]:
        return self.health.status()

    async def status_async(self) -> dict[str, Any]:
        return await self.health.status_async()

    def config_snapshot(self) -> dict[str, Any]:
        """What a producer needs: the sampling parameters per ingress interface, and each
        session's capture filter as the program libpcap compiled when this config was
        accepted (``filter_program``: struct bpf_insn[], host order; b"": none).  Shipping
        the program rather than the text means one libpcap, the daemon's, decides what a
        filter means, and a producer runs exactly what check-config and reload accepted; it
        still validates the program (mirrord.filter.check_program, bpf_validate in the tap)."""
        s = self.state
        return {
            "instance": s.instance,
            "generation": s.generation,
            "runtime_dir": str(s.config.daemon.runtime_dir),
            "sessions": [{**x.fixed, "filter_program": x.config.filter_program} for x in self.sessions],
            "interfaces": {i: x.config.id for x in self.sessions for i in x.config.input},
        }

    def register(self, path: Path) -> RingReader:
        return self.rings.register(path)

    def register_fds(self, name: str, ring_fd: int, eventfd: int, path: Path | None = None, *,
                     peer: tuple[int, int] | None = None) -> RingReader:
        return self.rings.register_fds(name, ring_fd, eventfd, path=path, peer=peer)

    def _listen_devices(self) -> dict[int, int]:
        """The open outputs of when_listened sessions: {ifindex: session id}."""
        return {s.sink.ifindex: s.config.id for s in self.sessions
                if s.config.when_listened and s.sink.is_open and s.sink.ifindex}

    def _on_listened(self, ids: list[int]) -> None:
        """Someone started or stopped listening to a when_listened session's output: every
        ring's producer is told at once (ring header), and status shows it."""
        self.rings.set_listened(ids)
        for s in self.sessions:
            s.listened = s.config.id in ids

    def _fold(self, routes: Routes) -> None:
        """A ring is detached: its route table's counters (and errnos) go to the sessions."""
        self.sessions.note_errno([routes])
        self.sessions.fold(routes)

    # ------------------------------------------------------------ outputs
    async def open_outputs(self, sessions: Iterable[SessionState], event: str = "output_open") -> None:
        """Open the outputs of these sessions that are not open, in one passing thread (an
        ``interface`` output whose device is missing is not tried: it waits for its
        RTM_NEWLINK).  Each that fails gets a retry, backed off and jittered."""
        todo = []
        for s in sessions:
            if s.sink.is_open:
                s.retry = None
            else:
                todo.append(s)
        results = await open_sinks([s.sink for s in todo])
        now = time.monotonic()
        for s, r in zip(todo, results):
            if isinstance(r, OSError):
                self._retry_later(s, now)
                continue
            s.retry = None
            if event == "output_open":
                log.info("event=output_open session=%s output=%s type=%s", s.name, s.output.name, s.output.type)
            else:
                log.info("event=%s session=%s output=%s", event, s.name, s.output.name)
            self.rings.set_fd(s.slot, s.sink.fd)

    @staticmethod
    def _retry_later(s: SessionState, now: float) -> None:
        _, delay = s.retry or (0.0, 0.0)
        delay = min(REOPEN_MAX, delay * 2) if delay else REOPEN_EVERY
        s.retry = (now + delay * random.uniform(0.5, 1.0), delay)

    def release_sink(self, s: SessionState, reason: str) -> int:
        """Take the session's output out of every route and mark it closed; the fd it
        returns is closed by the caller with ``close_fds`` (off the event loop)."""
        self.rings.set_fd(s.slot, -1)  # no route keeps a closed (and reusable) descriptor number
        return s.sink.release(reason)

    async def on_links(self, batch: list[LinkEvent]) -> None:
        """A batch of (event, ifname, ifindex): outputs deleted are closed, outputs that
        appeared are opened, each kind all at once in a passing thread."""
        async with self.lock:
            gone: list[int] = []
            back: dict[str, SessionState] = {}
            for event, ifname, index in batch:
                s = self.sessions.by_output.get(ifname)
                if s is None:
                    continue
                sink = s.sink
                # A deletion is only that of our device if the index is the one the sink
                # holds: a queued event of an earlier device of that name (one a failed open
                # created and removed) must not close the open one, whose close makes another
                # event... (that loop is how an EMFILE storm left the output flapping for good)
                stale = bool(index and sink.ifindex and index != sink.ifindex)
                if event == "RTM_DELLINK" and sink.is_open and not stale:
                    gone.append(self.release_sink(s, f"{s.output.type} {ifname}: device deleted"))
                    log.warning("event=output_gone session=%s output=%s", s.name, ifname)
                    self._retry_later(s, time.monotonic())  # a TAP/TUN is re-created by a retry
                elif event == "RTM_NEWLINK" and not sink.is_open:
                    back[s.name] = s
            await close_fds(gone)
            await self.open_outputs(list(back.values()), "output_back")

    async def on_link(self, event: str, ifname: str, index: int = 0) -> None:
        await self.on_links([(event, ifname, index)])

    async def housekeeping(self) -> None:
        while True:
            self.rings.tick()
            now = time.monotonic()
            if any(s.retry and s.retry[0] <= now for s in self.sessions):
                async with self.lock:
                    now = time.monotonic()
                    due = [s for s in self.sessions if s.retry and s.retry[0] <= now]
                    await self.open_outputs(due, "output_back")
            self.sessions.log_sink_errors(self.rings.tables(), now)
            await asyncio.sleep(TICK)

    # ------------------------------------------------------------ reload
    async def reload(self, new: Config | None = None) -> tuple[bool, str | None]:
        """Apply a new config; on any error keep the running one and say why."""
        async with self.lock:
            return await self._reload(new)

    def _refused(self, why: str) -> tuple[bool, str | None]:
        self.state.last_reload_ok, self.state.last_reload_error = False, why
        log.error("event=reload_refused reason=%r", why)
        return False, why

    async def _reload(self, new: Config | None) -> tuple[bool, str | None]:
        try:
            if new is None:
                if self.config_path is None:
                    raise ConfigError("no configuration file to reload")
                new = cfgmod.load(self.config_path)
            if new.daemon != self.config.daemon:
                changed = [f.name for f in dataclasses.fields(new.daemon)
                           if getattr(new.daemon, f.name) != getattr(self.config.daemon, f.name)]
                raise ConfigError(f"{new.source}: [daemon]: key \"{changed[0]}\": changes need a restart")
        except ConfigError as e:
            return self._refused(str(e))

        # Prepare: every output the new config needs is opened before anything changes;
        # on any failure the ones just opened are closed and the running config stays whole.
        try:
            plan, fresh = await self._prepare_outputs(new)
        except ReloadFailed as e:
            return self._refused(str(e))

        # Switch.  No await from here until the new tables are in place: a drain running
        # under the old tables after their counters were folded in would go uncounted.
        self.rings.drain_now()  # deliver what was routed under the old table first
        tables = self.rings.tables()
        self.sessions.log_sink_errors(tables, time.monotonic(), force=True)  # nothing held back is lost
        for t in tables:
            self.sessions.fold(t)
        kept = {id(k) for k in plan.values()}
        closing = [self.release_sink(s, "removed by reload") for s in self.sessions if id(s.sink) not in kept]
        self.sessions.replace(list(new.sessions), plan)  # (a removed session's counters stay aside)
        self.state.config = new
        self.rings.replace_routes()  # outputs still missing are -1 (no_output)
        self.listeners.listened = None  # new sessions: told again at the next look
        now = time.monotonic()
        for s in self.sessions:
            if not s.sink.is_open:
                self._retry_later(s, now)
            elif id(s.sink) in fresh:
                log.info("event=output_open session=%s output=%s type=%s", s.name, s.output.name,
                         s.output.type)
        st = self.state
        st.generation += 1
        st.last_reload_ok, st.last_reload_error = True, None
        log.info("event=reload_applied generation=%d sessions=%d", st.generation, len(self.sessions))
        self._log_missing_inputs()
        await close_fds(closing)  # after the switch: no route holds these any more
        return True, None

    async def _prepare_outputs(self, new: Config) -> tuple[dict[str, Sink], set[int]]:
        """The sink of every session of ``new``, open unless its ``interface`` device is
        missing (that waits for the device, as at start).  An output unchanged (same type
        and name, whichever session had it) keeps its open sink.  A new TAP/TUN whose name
        an old TAP/TUN of another type holds can only be made once the old one is gone: the
        old one is closed first and, should the new one fail, opened again.
        Raises ReloadFailed naming the session, the output and the reason."""
        current = {s.output: s.sink for s in self.sessions}
        plan: dict[str, Sink] = {}
        for s in new.sessions:
            plan[s.name] = current.get(s.output) or sink_for(s.output)
        kept = {id(k) for k in current.values()}
        fresh = [(s, plan[s.name]) for s in new.sessions if id(plan[s.name]) not in kept]
        owned = {o.name: o for o in current if o.type in ("tap", "tun")}
        swap = [(s, k) for s, k in fresh if s.output.name in owned]
        first = [(s, k) for s, k in fresh if s.output.name not in owned]

        async def open_or_fail(pairs: list[tuple[Session, Sink]]) -> str | None:
            results = await open_sinks([k for _, k in pairs])
            for (s, k), r in zip(pairs, results):
                if isinstance(r, OSError) and not (k.kind == "interface" and r.errno == errnomod.ENODEV):
                    return f'session "{s.name}": output {s.output.type} {s.output.name}: {r.strerror or r}'
            return None

        why = await open_or_fail(first)
        if why is None and swap:
            names = {x.output.name for x, _ in swap}
            old = [s for s in self.sessions if s.output.name in names and s.output.type in ("tap", "tun")]
            await close_fds([self.release_sink(s, "replaced by reload") for s in old])
            why = await open_or_fail(swap)
            if why is not None:  # put the old outputs back
                await close_fds([k.release("reload refused") for _, k in swap])
                await self.open_outputs(old)
                why += " (the outputs it replaced were opened again)"
        if why is not None:
            await close_fds([k.release("reload refused") for _, k in fresh])
            raise ReloadFailed(f"{new.source}: {why}; the running config stays")
        return plan, {id(k) for _, k in fresh}

    # ------------------------------------------------------------ lifecycle
    async def run(self, *, ready: Callable[[], None] | None = None,
                  drain_deadline: float = STOP_DEADLINE) -> None:
        """Run until SIGTERM/SIGINT.  Resources nest so that teardown runs in reverse:
        stop the tasks, stop accepting (control, HTTP), drain what the rings hold into the
        still-open outputs (bounded by ``drain_deadline``), close the outputs, unmap."""
        loop = asyncio.get_running_loop()
        d = self.config.daemon
        rd = d.runtime_dir
        rd.mkdir(mode=0o770, parents=True, exist_ok=True)
        if why := rundir.check(rd):  # whoever can write it can replace control.sock
            raise OSError(errnomod.EPERM, why)
        if why := rundir.check_control_socket(d.control_socket, rd):  # the same, elsewhere
            raise OSError(errnomod.EPERM, why)
        self.raise_nofile()
        for sig, what in ((signal.SIGTERM, "stop"), (signal.SIGINT, "stop"), (signal.SIGHUP, "reload")):
            loop.add_signal_handler(sig, self._on_signal, what)
        st = self.state
        try:
            async with contextlib.AsyncExitStack() as stack:
                stack.callback(self.rings.close)
                links = link_socket()  # bound first: no device appearing now is missed
                stack.callback(links.close)
                await self.open_outputs(self.sessions)
                stack.push_async_callback(self._close_sinks)
                stack.callback(self._drain_all, drain_deadline)
                if d.http.enabled:
                    await stack.enter_async_context(HttpServer(
                        self.health, d.http, self.registry, max_connections=self.client_caps[1],
                        timeout=d.client_timeout))
                await stack.enter_async_context(ControlServer(
                    self, d, max_connections=self.client_caps[0], timeout=d.client_timeout))
                st.tasks = [asyncio.create_task(watch_links(links, self.on_links, self._output_names),
                                                name="links"),
                            asyncio.create_task(self.housekeeping(), name="housekeeping"),
                            asyncio.create_task(self.health.heartbeat(self.notifier), name="heartbeat"),
                            asyncio.create_task(self.listeners.run(), name="listeners")]
                stack.push_async_callback(_cancel, st.tasks)
                self.rings.scan()
                st.applied = True
                log.info("event=started sessions=%d runtime_dir=%s control=%s http=%s", len(self.sessions),
                         rd, d.control_socket, d.http)
                self._log_missing_inputs()
                self.notifier.ready(self.health.summary())
                if ready:
                    ready()
                stop = asyncio.create_task(st.stopping.wait())
                done, _ = await asyncio.wait([stop, *st.tasks], return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    if t is not stop and t.exception() is not None:
                        log.error("event=task_failed task=%s error=%r", t.get_name(), t.exception())
                        raise t.exception()  # type: ignore[misc]
                self.notifier.stopping(f"stopping: {self.health.summary()}")
                log.info("event=stopping")
        finally:
            for name, c in self.sessions.counters(self.rings.tables()).items():
                log.info("event=session_final session=%s %s", name,
                         " ".join(f"{k}={v}" for k, v in c.as_dict().items()))
            log.info("event=stopped")
            self.notifier.close()

    def _log_missing_inputs(self) -> None:
        """One line per session input that does not exist here now: not an error, the fast
        path binds it (and the session mirrors it) once it appears (docs/fast-path.md)."""
        try:
            missing = missing_inputs(s.config for s in self.sessions)
        except OSError:
            return
        for name, dev in missing:
            log.warning("event=input_missing session=%s input=%s reason='no such interface here now: "
                        "mirrored as soon as it appears'", name, dev)

    def _output_names(self) -> list[str]:
        return [s.output.name for s in self.sessions]

    def raise_nofile(self) -> None:
        """Raise the soft RLIMIT_NOFILE to the hard one (as most daemons do), then cap the
        control and HTTP clients so that, whatever they do, FD_RESERVE descriptors (plus
        FD_PER_SESSION per session) and half of the rest stay for outputs, rings and their
        reopening: an accept flood ends at the caps, never at EMFILE."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            want = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
                soft = want
            except (ValueError, OSError) as e:  # e.g. above fs.nr_open: keep the soft limit
                log.warning("event=nofile_not_raised soft=%d hard=%d reason=%r", soft, hard, str(e))
        d = self.config.daemon
        want_c, want_h = d.control_max_connections, d.http_max_connections
        per_c = 1 + ControlServer.MAX_FDS  # a control client may hold the fds of its message
        budget = max(per_c + 1, (soft - FD_RESERVE - FD_PER_SESSION * len(self.sessions)) // 2)
        if per_c * want_c + want_h > budget:
            c = max(1, budget * want_c // (per_c * want_c + want_h))
            self.client_caps = (c, max(1, budget - per_c * c))
            log.warning("event=client_caps_lowered nofile=%d control_max_connections=%d "
                        "http_max_connections=%d", soft, *self.client_caps)
        else:
            self.client_caps = (want_c, want_h)
        log.info("event=nofile limit=%d control_max_connections=%d http_max_connections=%d",
                 soft, *self.client_caps)

    def _on_signal(self, what: str) -> None:
        if what == "stop":
            self.state.stopping.set()
        else:
            asyncio.ensure_future(self._reload_signalled())

    async def _reload_signalled(self) -> None:
        """RELOADING=1, then READY=1 whatever the outcome: systemd leaves the reloading
        state only on READY=1, and a refused reload leaves the old config running."""
        self.notifier.reloading()
        try:
            await self.reload()
        except Exception as e:  # noqa: BLE001 - a bug: say so, keep serving the running config
            log.exception("event=reload_failed error=%r", e)
            self.state.last_reload_ok, self.state.last_reload_error = False, f"internal error: {e!r}"
        finally:
            self.notifier.ready(self.health.summary())

    def _drain_all(self, deadline: float) -> None:
        """Shutdown: deliver what the rings hold now, for at most ``deadline`` seconds."""
        end = time.monotonic() + deadline
        total = 0
        for r in self.rings:
            while time.monotonic() < end:
                n = r.drain_now(BUDGET * 16)
                total += n
                if n < BUDGET * 16:
                    break
        for r in self.rings:
            r.muted = True  # the outputs close next (off the loop): nothing drains into -1
        log.info("event=final_drain records=%d", total)
        self.sessions.log_sink_errors(self.rings.tables(), time.monotonic(), force=True)

    async def _close_sinks(self) -> None:
        await close_fds([self.release_sink(s, "stopped") for s in self.sessions])


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t
