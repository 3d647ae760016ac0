"""The daemon at run time: sessions and their sinks, ring readers, the link watcher.

Layering: the CLI loads a Config and hands it to ``Daemon``; ``Daemon.run()`` nests the
resources (sinks, link watcher, control socket) so that teardown runs in reverse order.
One ``RingReader`` per attached ring is woken by the ring's eventfd through the event
loop and drains in budgeted batches with one C call each, so a busy ring cannot starve
the others or the control socket.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno as errnomod
import logging
import os
import random
import secrets
import select
import signal
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mirrord import config as cfgmod
from mirrord import rundir
from mirrord.config import Config, ConfigError, Session
from mirrord.metrics import make_registry
from mirrord.ring import HEADER_SIZE, STATS_WORDS, Consumer, DrainStats, RingError, Routes, probe, sum_stats
from mirrord.sdnotify import Notifier
from mirrord.sinks import Sink, close_fds, open_sinks, sink_for

log = logging.getLogger("mirrord")

BUDGET = 1024          # records per drain call before yielding to the event loop
TICK = 1.0             # housekeeping: stragglers, dead producers, new ring files
CORRUPT_LOG_EVERY = 10.0  # seconds between two ring_corrupt log lines of one ring
MAX_RINGS_LOG_EVERY = 10.0   # seconds between two max_rings_reached lines of one kind
SINK_ERROR_LOG_EVERY = 10.0  # seconds between two sink_error log lines of one session
POLL_NO_EVENTFD = 0.02 # rings whose eventfd could not be fetched are polled this often
REOPEN_EVERY = 5.0     # first retry of an output that failed to open; doubles per failure ...
REOPEN_MAX = 60.0      # ... up to this, each delay jittered (x0.5-1.0) so retries spread out
BEAT = 0.5             # heartbeat: liveness, WATCHDOG=1 and STATUS= come from this task
STALL = 10.0           # a ring with records not drained for this long makes /healthz fail
STOP_DEADLINE = 2.0    # SIGTERM: drain what the rings hold for at most this long
FD_RESERVE = 64        # descriptors the clients' caps leave free (outputs, rings, netlink)
FD_PER_SESSION = 4     # and per session: its output, and the sockets of a reopen


@dataclasses.dataclass
class SessionCounters:
    """Exact per-session totals: what rings handed over and where each copy went."""

    mirrored_packets: int = 0
    mirrored_bytes: int = 0
    dropped_no_output: int = 0
    dropped_sink_busy: int = 0
    dropped_sink_error: int = 0
    dropped_not_ip: int = 0
    truncated: int = 0

    def add(self, s: DrainStats) -> None:
        self.mirrored_packets += s.packets
        self.mirrored_bytes += s.bytes
        self.dropped_no_output += s.dropped_no_output
        self.dropped_sink_busy += s.dropped_busy
        self.dropped_sink_error += s.dropped_error
        self.dropped_not_ip += s.dropped_not_ip
        self.truncated += s.truncated

    def add_words(self, w: list[int], o: int) -> None:
        """Add one route's counters from ``Routes.flat_stats()`` (its words from ``o``)."""
        self.mirrored_packets += w[o]
        self.mirrored_bytes += w[o + 1]
        self.dropped_sink_busy += w[o + 2]
        self.dropped_sink_error += w[o + 3]
        self.dropped_not_ip += w[o + 4]
        self.dropped_no_output += w[o + 5]
        self.truncated += w[o + 6]

    def as_dict(self) -> dict[str, int]:
        return {"mirrored_packets": self.mirrored_packets, "mirrored_bytes": self.mirrored_bytes,
                "dropped_no_output": self.dropped_no_output, "dropped_sink_busy": self.dropped_sink_busy,
                "dropped_sink_error": self.dropped_sink_error, "dropped_not_ip": self.dropped_not_ip,
                "truncated": self.truncated}


class ReloadFailed(Exception):
    """The new config's outputs could not all be made ready; the running config stays."""


class RingReader:
    """One attached ring: eventfd-driven, budgeted drain into the sessions' outputs."""

    def __init__(self, daemon: Daemon, path: Path, consumer: Consumer, key: tuple[int, int],
                 name: str | None = None) -> None:
        self.daemon = daemon
        self.path = path
        self.name = name or path.name  # unique among attached rings: the label in status and /metrics
        self.consumer = consumer
        self.key = key
        self.routes = daemon.make_routes()
        self.producer_pid = consumer.counters().producer_pid
        self.via = "scan"  # how it came: "scan" (found in runtime_dir) or "scm_rights" (registered)
        # a ring registered with its descriptors lives as long as the process that registered
        # it (SO_PEERCRED / SO_PEERPIDFD), not the pid its own header names
        self.peer_pid: int | None = None
        self.peer_pidfd = -1
        self._scheduled = False
        self._poll: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self.muted = False  # after the final drain: no more drains from the loop
        self.last_drain = time.monotonic()
        self._corrupt_logged = consumer.totals.corrupt  # corruption events already logged
        self._corrupt_log_at = -CORRUPT_LOG_EVERY
        if consumer.eventfd >= 0:
            self.loop.add_reader(consumer.eventfd, self._on_wake)
        self.schedule()

    # -- draining
    def schedule(self) -> None:
        if not self._scheduled and not self.closed and not self.muted:
            self._scheduled = True
            self.loop.call_soon(self._drain)

    def _on_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.consumer.eventfd, 8)
        self.schedule()

    def _drain(self) -> None:
        self._scheduled = False
        if self.closed or self.muted:
            return
        self.last_drain = time.monotonic()
        n = self.consumer.drain_routes(self.routes, BUDGET)
        if self.consumer.lost:  # its file was truncated: the guard swapped in zero pages
            self.daemon.ring_lost(self)
            return
        if self.consumer.totals.corrupt != self._corrupt_logged:
            self.log_corruption()
        if n >= BUDGET:
            self.schedule()  # more to do: yield to the loop first
        elif self.consumer.eventfd < 0:
            if self._poll is None or self._poll.cancelled():
                self._poll = self.loop.call_later(POLL_NO_EVENTFD, self._repoll)
        elif not self.consumer.prepare_sleep():
            self.schedule()  # records arrived while we were going to sleep

    def _repoll(self) -> None:
        self._poll = None
        self.schedule()

    def drain_now(self, budget: int = 1 << 30) -> int:
        """Drain synchronously (reload, detach, shutdown)."""
        self.last_drain = time.monotonic()
        done = 0
        while done < budget:
            n = self.consumer.drain_routes(self.routes, min(BUDGET, budget - done))
            if self.consumer.totals.corrupt != self._corrupt_logged:
                self.log_corruption()
            done += n
            if n < BUDGET:  # (a lost ring drains nothing: its next _drain detaches it)
                break
        return done

    def log_corruption(self, force: bool = False) -> None:
        """One line for the first corruption event, then at most one per CORRUPT_LOG_EVERY
        seconds with how many came since (a scribbled ring can reset on every batch); the
        housekeeping tick drains every ring, so a held-back count is logged soon after."""
        now = time.monotonic()
        if not force and now - self._corrupt_log_at < CORRUPT_LOG_EVERY:
            return
        total = self.consumer.totals.corrupt
        log.warning("event=ring_corrupt ring=%s events=%d reason=%r", self.name, total - self._corrupt_logged,
                    self.consumer.corruption())
        self._corrupt_logged, self._corrupt_log_at = total, now

    # -- state
    def stalled(self, now: float) -> float:
        """Seconds the ring has held records without a drain (0 when healthy)."""
        idle = now - self.last_drain
        if idle < STALL or self.consumer.counters().fill_bytes == 0:
            return 0.0
        return idle

    def producer_alive(self) -> bool:
        if self.peer_pidfd >= 0:  # a pidfd is readable once its process has exited
            p = select.poll()
            p.register(self.peer_pidfd, select.POLLIN)
            return not p.poll(0)
        try:
            os.kill(self.producer_pid if self.peer_pid is None else self.peer_pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def set_fd(self, index: int, fd: int) -> None:
        self.routes.set(index, fd=fd)

    def close(self) -> None:
        if self.closed:
            return
        if self.consumer.totals.corrupt != self._corrupt_logged:
            self.log_corruption(force=True)
        self.closed = True
        if self.peer_pidfd >= 0:
            os.close(self.peer_pidfd)
            self.peer_pidfd = -1
        if self.consumer.eventfd >= 0:
            self.loop.remove_reader(self.consumer.eventfd)
        if self._poll is not None:
            self._poll.cancel()
        self.consumer.close()

    def status(self) -> dict[str, Any]:
        k = self.consumer.counters()
        t = self.consumer.totals
        return {
            "name": self.name,
            "path": str(self.path),
            "producer_pid": self.producer_pid,
            "registered_by": self.peer_pid,
            "eventfd": self.consumer.eventfd >= 0,
            "via": self.via,
            "offered": k.offered,
            "pushed_packets": k.pushed_packets,
            "pushed_bytes": k.pushed_bytes,
            "dropped_ring_full": k.dropped_ring_full_packets,
            "dropped_ring_full_bytes": k.dropped_ring_full_bytes,
            "consumed_packets": k.consumed_packets,
            "dropped_no_session": t.unrouted,
            "corrupt": k.corrupt_events,
            "last_corrupt": self.consumer.corruption() or None,
            "truncated": k.truncated_packets,
            "fill_bytes": k.fill_bytes,
            "data_size": k.data_size,
        }


class Daemon:
    def __init__(self, config: Config, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.generation = 1
        # this daemon process: a restarted daemon starts again at generation 1, so a
        # producer follows (instance, generation)
        self.instance = secrets.token_hex(8)
        self.last_reload_ok = True
        self.last_reload_error: str | None = None
        self.sessions: list[Session] = list(config.sessions)
        self._index: dict[str, int] = {}       # session name -> its route row
        self._by_output: dict[str, Session] = {}  # output name -> its session (names are unique)
        self._set_sessions(self.sessions)
        self.sinks: dict[str, Sink] = {s.name: sink_for(s.output) for s in self.sessions}
        # outputs that failed to open, by session: (when to retry, the delay that gave it)
        self.retry: dict[str, tuple[float, float]] = {}
        self.readers: dict[tuple[int, int], RingReader] = {}
        self.dead: set[tuple[int, int]] = set()
        self.retired: dict[str, SessionCounters] = {}
        # per session: (sink errors already logged, when), and the errno of the latest
        self.sink_errors_logged: dict[str, tuple[int, float]] = {}
        self.sink_errno: dict[str, int] = {}
        self.ring_errors: dict[str, str] = {}
        self.lost: set[tuple[int, int]] = set()  # rings whose file was truncated: never again
        self._budget_logged: dict[str, float] = {}  # max_rings refusals: when last logged, per kind
        self.stopping = asyncio.Event()
        self.lock = asyncio.Lock()  # one reload or output (re)open at a time
        self.started = time.monotonic()
        self.applied = False        # the config is applied and the outputs were tried
        self.tasks: list[asyncio.Task[Any]] = []
        self.last_beat = time.monotonic()
        self.notifier = Notifier()
        self.registry = make_registry(self.status)
        d = config.daemon
        self.client_caps = (d.control_max_connections, d.http_max_connections)  # see raise_nofile

    # ------------------------------------------------------------ routes and sinks
    def make_routes(self) -> Routes:
        rows = []
        for s in self.sessions:
            sink = self.sinks.get(s.name)
            rows.append((s.id, sink.fd if sink else -1, sink.mode if sink else 0))
        return Routes(rows)

    def _set_sessions(self, sessions: list[Session]) -> None:
        self.sessions = sessions
        self._index = {s.name: i for i, s in enumerate(sessions)}
        self._by_output = {s.output.name: s for s in sessions}
        # what status says of each session that only a reload changes (built once, not per call)
        self._status_fixed = [{"name": s.name, "id": s.id, "input": list(s.input), "rate": s.rate,
                               "run_length": s.run_length, "max_packet_length": s.max_packet_length}
                              for s in sessions]

    def _session_index(self, name: str) -> int | None:
        return self._index.get(name)

    def _retire_routes(self) -> None:
        """Fold every reader's per-route counters into the per-session totals."""
        for r in self.readers.values():
            self._retire_reader(r)

    def _retire_reader(self, r: RingReader) -> None:
        flat = sum_stats([r.routes], len(self.sessions))
        if not any(flat):
            return
        for i, s in enumerate(self.sessions):
            self.retired.setdefault(s.name, SessionCounters()).add_words(flat, i * STATS_WORDS)

    def sink_changed(self, session: Session) -> None:
        i = self._session_index(session.name)
        sink = self.sinks.get(session.name)
        if i is None or sink is None:
            return
        for r in self.readers.values():
            r.set_fd(i, sink.fd)

    async def open_outputs(self, sessions: list[Session], event: str = "output_open") -> None:
        """Open the outputs of these sessions that are not open, in one passing thread (an
        ``interface`` output whose device is missing is not tried: it waits for its
        RTM_NEWLINK).  Each that fails gets a retry, backed off and jittered."""
        todo = []
        for s in sessions:
            if self.sinks[s.name].is_open:
                self.retry.pop(s.name, None)
            else:
                todo.append(s)
        results = await open_sinks([self.sinks[s.name] for s in todo])
        now = time.monotonic()
        for s, r in zip(todo, results):
            if isinstance(r, OSError):
                self._retry_later(s.name, now)
                continue
            self.retry.pop(s.name, None)
            if event == "output_open":
                log.info("event=output_open session=%s output=%s type=%s", s.name, s.output.name, s.output.type)
            else:
                log.info("event=%s session=%s output=%s", event, s.name, s.output.name)
            self.sink_changed(s)

    def _retry_later(self, name: str, now: float) -> None:
        _, delay = self.retry.get(name, (0.0, 0.0))
        delay = min(REOPEN_MAX, delay * 2) if delay else REOPEN_EVERY
        self.retry[name] = (now + delay * random.uniform(0.5, 1.0), delay)

    def release_sink(self, name: str, reason: str) -> int:
        """Take the session's output out of every route and mark it closed; the fd it
        returns is closed by the caller with ``close_fds`` (off the event loop)."""
        sink = self.sinks.get(name)
        if sink is None:
            return -1
        i = self._session_index(name)
        if i is not None:  # no route keeps a closed (and reusable) descriptor number
            for r in self.readers.values():
                r.set_fd(i, -1)
        return sink.release(reason)

    # ------------------------------------------------------------ link events
    async def on_links(self, batch: list[tuple[str, str, int]]) -> None:
        """A batch of (event, ifname, ifindex): outputs deleted are closed, outputs that
        appeared are opened, each kind all at once in a passing thread."""
        async with self.lock:
            gone: list[int] = []
            back: dict[str, Session] = {}
            for event, ifname, index in batch:
                s = self._by_output.get(ifname)
                if s is None:
                    continue
                sink = self.sinks[s.name]
                # A deletion is only that of our device if the index is the one the sink
                # holds: a queued event of an earlier device of that name (one a failed open
                # created and removed) must not close the open one, whose close makes another
                # event... (that loop is how an EMFILE storm left the output flapping for good)
                stale = bool(index and sink.ifindex and index != sink.ifindex)
                if event == "RTM_DELLINK" and sink.is_open and not stale:
                    gone.append(self.release_sink(s.name, f"{s.output.type} {ifname}: device deleted"))
                    log.warning("event=output_gone session=%s output=%s", s.name, ifname)
                    self._retry_later(s.name, time.monotonic())  # a TAP/TUN is re-created by a retry
                elif event == "RTM_NEWLINK" and not sink.is_open:
                    back[s.name] = s
            await close_fds(gone)
            await self.open_outputs(list(back.values()), "output_back")

    async def on_link(self, event: str, ifname: str, index: int = 0) -> None:
        await self.on_links([(event, ifname, index)])

    @staticmethod
    def link_socket() -> Any:
        """The rtnetlink socket of link events, bound before the outputs are first looked
        at so that a device appearing in between is not missed."""
        import socket

        from pyroute2.netlink.rtnl import RTMGRP_LINK

        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, RTMGRP_LINK))
        sock.setblocking(False)
        return sock

    async def watch_links(self, sock: Any = None) -> None:
        """Link events from an rtnetlink socket on the event loop, parsed by pyroute2.

        (pyroute2's asyncio API needs AF_NETLINK datagram endpoints, which uvloop lacks,
        so the socket is read with add_reader and pyroute2's marshal parses it.)
        """
        from pyroute2.netlink.rtnl.marshal import MarshalRtnl

        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, str, int]] = asyncio.Queue()
        marshal = MarshalRtnl()
        if sock is None:
            sock = self.link_socket()

        def readable() -> None:
            try:
                data = sock.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError as e:  # ENOBUFS: events lost; resync by retrying every output
                log.warning("event=netlink_overrun reason=%r", e.strerror)
                for s in self.sessions:
                    events.put_nowait(("RTM_NEWLINK", s.output.name, 0))
                return
            for msg in marshal.parse(data):
                name = msg.get_attr("IFLA_IFNAME")
                if msg["event"] in ("RTM_NEWLINK", "RTM_DELLINK") and name:
                    events.put_nowait((msg["event"], name, int(msg.get("index", 0) or 0)))

        loop.add_reader(sock.fileno(), readable)
        try:
            while True:
                batch = [await events.get()]
                while not events.empty():
                    batch.append(events.get_nowait())
                await self.on_links(batch)
        finally:
            loop.remove_reader(sock.fileno())
            sock.close()

    # ------------------------------------------------------------ rings
    def _ring_label(self, name: str) -> str:
        """The name itself, or ``name#2``, ``#3``... when an attached ring already has it
        (a ring moved away and a new one made under its name, a memfd registered twice):
        one label per ring, so /metrics never has two series for one label set.  A ring of
        that name whose producer is gone (a restarted forwarder's old ring, not yet seen by
        housekeeping) is detached first, with its final drain: the new ring takes the name."""
        for r in [r for r in self.readers.values() if r.name.partition("#")[0] == name]:
            if not r.producer_alive():
                self.detach(r, "producer gone")
        taken = {r.name for r in self.readers.values()}
        k = 2
        label = name
        while label in taken:
            label, k = f"{name}#{k}", k + 1
        return label

    def _add_reader(self, key: tuple[int, int], path: Path, cons: Consumer, via: str = "") -> RingReader:
        r = RingReader(self, path, cons, key, self._ring_label(path.name))
        r.via = via or "scan"
        self.readers[key] = r
        self.ring_errors.pop(str(path), None)
        log.info("event=ring_attached ring=%s producer_pid=%d eventfd=%s%s", r.name, r.producer_pid,
                 "yes" if cons.eventfd >= 0 else "no", f" via={via}" if via else "")
        return r

    def _check_runtime_dir(self, path: Path) -> Path:
        """Rings named by path are only taken from the runtime directory, by their name
        there: a symbolic link is not followed (it is refused when opened)."""
        rd = self.config.daemon.runtime_dir.resolve()
        if not path.is_absolute() or path.parent.resolve() != rd or path.name in ("", ".", ".."):
            raise RingError(1, f"{path}: not in the runtime directory {rd}")
        return rd / path.name

    def _max_data(self) -> int:
        return self.config.daemon.max_ring_size

    def _check_ring_budget(self, where: object, by_descriptor: bool) -> None:
        """At most ``max_rings`` rings of each origin: files of the runtime directory (whoever
        makes them can write that trusted directory) and rings passed by descriptor alone (any
        allowed control client): a flood of the second kind can neither fill the SIGBUS guard
        table (4096 slots, two budgets of at most 2048) nor lock the forwarder's rings out."""
        cap = self.config.daemon.max_rings
        n = sum(1 for r in self.readers.values() if (not r.path.is_absolute()) == by_descriptor)
        if n < cap:
            return
        kind = "rings passed by descriptor alone" if by_descriptor else "rings of the runtime directory"
        why = f"{where}: {n} {kind} are attached, [daemon] max_rings is {cap}: refused"
        now = time.monotonic()
        if now - self._budget_logged.get(kind, -MAX_RINGS_LOG_EVERY) >= MAX_RINGS_LOG_EVERY:
            self._budget_logged[kind] = now
            log.warning("event=max_rings_reached kind=%r max_rings=%d reason=%r", kind, cap, why)
        raise RingError(errnomod.EMFILE, why)

    def _check_size(self, where: object, size: int) -> None:
        limit = self._max_data()
        if size > HEADER_SIZE + limit:
            raise RingError(errnomod.EFBIG, f"{where}: ring file of {size} bytes (data area {size - HEADER_SIZE}) "
                                            f"is above [daemon] max_ring_size {limit}: refused")

    def _open_ring(self, path: Path) -> tuple[int, os.stat_result]:
        """Open the ring file ``path.name`` of the runtime directory for attaching, or
        refuse it with the reason: never through a symbolic link, never a FIFO, device
        or directory (checked on an O_PATH descriptor, before the file is really
        opened), only a file owned by root, the daemon's uid or an ``allowed_uids``
        entry, no bigger than ``max_ring_size``.  Nothing of a refused file is read."""
        rd = self.config.daemon.runtime_dir
        try:
            dfd = os.open(rd, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise RingError(e.errno, f"{rd}: {e.strerror}") from None
        try:
            pfd = os.open(path.name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        except OSError as e:
            raise RingError(e.errno, f"{path}: {e.strerror}") from None
        finally:
            os.close(dfd)
        try:
            st = os.fstat(pfd)
            if stat.S_ISLNK(st.st_mode):
                raise RingError(errnomod.ELOOP, f"{path}: a symbolic link: refused (ring files are not "
                                                "followed through links)")
            if not stat.S_ISREG(st.st_mode):
                raise RingError(errnomod.EINVAL, f"{path}: {_file_kind(st.st_mode)}, not a regular file: refused")
            owners = {0, os.geteuid(), *self.config.daemon.allowed_uids}
            if st.st_uid not in owners:
                raise RingError(errnomod.EPERM, f"{path}: owned by uid {st.st_uid}, not by root, the daemon's "
                                                f"uid {os.geteuid()} or an allowed_uids entry: refused")
            self._check_size(path, st.st_size)
            # the very inode checked above, now opened for real (O_NONBLOCK: belt and braces)
            try:
                fd = os.open(f"/proc/self/fd/{pfd}", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as e:
                raise RingError(e.errno, f"{path}: {e.strerror}") from None
        finally:
            os.close(pfd)
        return fd, st

    def _attach_fd(self, fd: int, path: Path, owner: int) -> Consumer:
        """Attach with the producer's eventfd, taken with pidfd_getfd from the pid the header
        names, only if that process runs as the file's owner (``_producer_pidfd``) and is the
        same process before and after the fetch (the fd taken is checked to be an eventfd by
        the native fetch); otherwise poll the ring, with a log line saying why."""
        limit = self._max_data()
        pidfd, why = _producer_pidfd(fd, owner)
        if pidfd >= 0:
            try:
                cons = Consumer(fd, eventfd=Consumer.FETCH_EVENTFD, max_data_size=limit)
            except RingError as e:
                if "eventfd" not in str(e) and "pidfd" not in str(e):
                    raise RingError(e.errno, f"{path}: {e.strerror}") from None
                why = e.strerror  # out of reach (gone, or no ptrace right), or not an eventfd
            else:
                if _pidfd_alive(pidfd):  # the pid the fetch opened was still this process
                    return cons
                cons.close()
                why = "the producer exited while its eventfd was taken"
            finally:
                os.close(pidfd)
        if why:
            log.info("event=ring_no_eventfd ring=%s reason=%r", path.name, why)
        try:
            return Consumer(fd, eventfd=Consumer.NO_EVENTFD, max_data_size=limit)
        except RingError as e:
            raise RingError(e.errno, f"{path}: {e.strerror}") from None

    def attach(self, path: Path, *, producer_gone_is_error: bool = False) -> RingReader | None:
        """Attach the ring file ``path.name`` of the runtime directory (see _open_ring)."""
        fd, st = self._open_ring(path)
        try:
            key = (st.st_dev, st.st_ino)
            if key in self.readers:
                return self.readers[key]
            if key in self.lost:
                raise RingError(errnomod.ENXIO, f"{path}: this ring was lost (its file truncated) and detached")
            if producer_gone_is_error and key in self.dead:
                raise RingError(1, f"{path}: its producer is gone")
            self._check_ring_budget(path, False)
            cons = self._attach_fd(fd, path, st.st_uid)
        finally:
            os.close(fd)
        return self._add_reader(key, path, cons)

    def register(self, path: Path) -> RingReader:
        """A producer announces its ring: only files in the runtime directory are taken."""
        r = self.attach(self._check_runtime_dir(path), producer_gone_is_error=True)
        assert r is not None
        return r

    def register_fds(self, name: str, ring_fd: int, eventfd: int, path: Path | None = None, *,
                     peer: tuple[int, int] | None = None) -> RingReader:
        """A producer handed over its ring's fd and eventfd with SCM_RIGHTS: a memfd (named
        ``fd:<name>``), or the named ring at ``path`` in the runtime directory, in which case
        the fd must be that very file (not a link to it) and the reader is named after it.
        ``peer``: (pid, pidfd or -1) of the process that sent it; the ring is detached when
        that process exits (the pidfd is dup'ed, the caller keeps its own)."""
        fst = os.fstat(ring_fd)
        key = (fst.st_dev, fst.st_ino)
        if path is not None:
            real = self._check_runtime_dir(path)
            try:
                st = os.stat(real, follow_symlinks=False)
            except OSError as e:
                raise RingError(e.errno, f"{path}: {e.strerror}") from None
            if (st.st_dev, st.st_ino) != key:
                raise RingError(1, f"{path}: the descriptor passed is not this file")
        r = self.readers.get(key)
        if r is not None:
            if r.consumer.eventfd >= 0 or eventfd < 0:
                return r
            self.detach(r, "re-attached with the eventfd the producer passed")  # was polled
        if key in self.dead:
            raise RingError(1, f"{path or name}: its producer is gone")
        if key in self.lost:
            raise RingError(errnomod.ENXIO, f"{path or name}: this ring was lost (its file truncated) and detached")
        self._check_size(path or name, fst.st_size)
        self._check_ring_budget(path or name, path is None)
        if peer is not None and peer[1] < 0 and not _pid_alive(peer[0]):
            raise RingError(errnomod.ESRCH, f"{path or name}: the process that registered it is gone")
        try:
            cons = Consumer(ring_fd, eventfd=eventfd if eventfd >= 0 else Consumer.NO_EVENTFD,
                            max_data_size=self._max_data())
        except RingError as e:
            raise RingError(e.errno, f"{path or name}: {e.strerror}") from None
        r = self._add_reader(key, real if path is not None else Path(f"fd:{name}"), cons, "scm_rights")
        if peer is not None:
            r.peer_pid = peer[0]
            if peer[1] >= 0:
                r.peer_pidfd = os.dup(peer[1])
        return r

    def detach(self, r: RingReader, reason: str, *, lost: bool = False) -> None:
        r.drain_now()
        self.note_sink_errno()  # the final drain's errors keep their errno
        self._retire_reader(r)
        r.close()
        self.readers.pop(r.key, None)
        if lost:
            log.warning("event=ring_lost ring=%s reason=%r", r.name, reason)
        else:
            log.info("event=ring_detached ring=%s reason=%s", r.name, reason)

    def ring_lost(self, r: RingReader) -> None:
        """The ring's file was truncated (or a page of it could not be backed): the SIGBUS
        guard swapped zero pages in.  Detach it for good, say so once, and show it in
        status; the other rings go on."""
        why = r.consumer.lost_reason() or "mapping lost"
        self.lost.add(r.key)
        self.detach(r, why, lost=True)
        self.ring_errors[str(r.path)] = f"lost ({why}): detached"

    def scan(self) -> None:
        rd = self.config.daemon.runtime_dir
        try:
            paths = sorted(rd.glob("*.ring"))
        except OSError:
            return
        present = {str(p) for p in paths}
        for gone in [k for k in self.ring_errors if k not in present]:
            del self.ring_errors[gone]
        for p in paths:
            try:
                st = p.lstat()  # a link is refused when opened; never followed
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in self.readers or key in self.dead or key in self.lost:
                continue
            try:
                r = self.attach(p)
            except RingError as e:
                if self.ring_errors.get(str(p)) != e.strerror:
                    log.warning("event=ring_refused ring=%s reason=%r", p.name, e.strerror)
                self.ring_errors[str(p)] = e.strerror
                continue
            if r is not None and not r.producer_alive():
                self.dead.add(key)
                self.detach(r, "producer gone")

    async def housekeeping(self) -> None:
        while True:
            self.scan()
            for r in list(self.readers.values()):
                r.schedule()  # stragglers and lost wake-ups
                if not r.producer_alive():
                    self.dead.add(r.key)
                    self.detach(r, "producer gone")
            now = time.monotonic()
            if any(at <= now for at, _ in self.retry.values()):
                async with self.lock:
                    now = time.monotonic()
                    due = [s for s in self.sessions if (t := self.retry.get(s.name)) and t[0] <= now]
                    await self.open_outputs(due, "output_back")
            self.log_sink_errors(now)
            await asyncio.sleep(TICK)

    def note_sink_errno(self) -> None:
        """The errno of the latest sink error of each session, taken (and cleared) from
        the routes of the rings that had one since the last look."""
        for r in self.readers.values():
            for i in r.routes.errno_routes():
                if e := r.routes.take_errno(i):
                    self.sink_errno[self.sessions[i].name] = e

    def log_sink_errors(self, now: float, *, force: bool = False) -> None:
        """A write error an operator must act on (EMSGSIZE: the output's MTU; ENETDOWN,
        EIO: the device is down) is logged with its errno: the first at once, then at most
        one line per SINK_ERROR_LOG_EVERY seconds per session with the count since, and
        with ``force`` (a reload, the stop) whatever was held back.
        Busy drops (EAGAIN, ENOBUFS) are flow control and stay counters."""
        self.note_sink_errno()
        counters = self.session_counters()
        for s in self.sessions:
            n = counters[s.name].dropped_sink_error
            seen, at = self.sink_errors_logged.get(s.name, (0, -SINK_ERROR_LOG_EVERY))
            if n <= seen or (now - at < SINK_ERROR_LOG_EVERY and not force):
                continue
            e = self.sink_errno.get(s.name, 0)
            log.warning("event=sink_error session=%s output=%s dropped=%d errno=%s reason=%r", s.name,
                        s.output.name, n - seen, errnomod.errorcode.get(e, str(e)), os.strerror(e) if e else "")
            self.sink_errors_logged[s.name] = (n, now)

    # ------------------------------------------------------------ reload
    async def reload(self, new: Config | None = None) -> tuple[bool, str | None]:
        """Apply a new config; on any error keep the running one and say why."""
        async with self.lock:
            return await self._reload(new)

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
            self.last_reload_ok = False
            self.last_reload_error = str(e)
            log.error("event=reload_refused reason=%r", str(e))
            return False, str(e)

        # Prepare: every output the new config needs is opened before anything changes;
        # on any failure the ones just opened are closed and the running config stays whole.
        try:
            plan, fresh = await self._prepare_outputs(new)
        except ReloadFailed as e:
            self.last_reload_ok = False
            self.last_reload_error = str(e)
            log.error("event=reload_refused reason=%r", str(e))
            return False, str(e)

        # Switch.  No await from here until the new tables are in place: a drain running
        # under the old tables after their counters were folded in would go uncounted.
        for r in self.readers.values():
            r.drain_now()  # deliver what was routed under the old table first
        self.log_sink_errors(time.monotonic(), force=True)  # nothing held back is lost
        self._retire_routes()
        kept = {id(k) for k in plan.values()}
        closing = [self.release_sink(n, "removed by reload") for n, k in self.sinks.items() if id(k) not in kept]
        new_names = {s.name for s in new.sessions}
        for name in self._index:
            if name not in new_names:
                self.sink_errno.pop(name, None)  # (its counters stay, as retired ones do)
        self._set_sessions(list(new.sessions))
        self.config = new
        self.sinks = plan
        for r in self.readers.values():
            r.routes = self.make_routes()  # outputs still missing are -1 (no_output)
            r.schedule()
        now = time.monotonic()
        self.retry = {}
        for s in self.sessions:
            if not plan[s.name].is_open:
                self._retry_later(s.name, now)
            elif id(plan[s.name]) in fresh:
                log.info("event=output_open session=%s output=%s type=%s", s.name, s.output.name,
                         s.output.type)
        self.generation += 1
        self.last_reload_ok = True
        self.last_reload_error = None
        log.info("event=reload_applied generation=%d sessions=%d", self.generation, len(self.sessions))
        await close_fds(closing)  # after the switch: no route holds these any more
        return True, None

    async def _prepare_outputs(self, new: Config) -> tuple[dict[str, Sink], set[int]]:
        """The sink of every session of ``new``, open unless its ``interface`` device is
        missing (that waits for the device, as at start).  An output unchanged (same type
        and name, whichever session had it) keeps its open sink.  A new TAP/TUN whose name
        an old TAP/TUN of another type holds can only be made once the old one is gone: the
        old one is closed first and, should the new one fail, opened again.
        Raises ReloadFailed naming the session, the output and the reason."""
        current = {s.output: self.sinks[s.name] for s in self.sessions if s.name in self.sinks}
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
            old = [(s, self.sinks[s.name]) for s in self.sessions
                   if s.output.name in names and s.output.type in ("tap", "tun")]
            await close_fds([self.release_sink(s.name, "replaced by reload") for s, _ in old])
            why = await open_or_fail(swap)
            if why is not None:  # put the old outputs back
                await close_fds([k.release("reload refused") for _, k in swap])
                await self.open_outputs([s for s, _ in old])
                why += " (the outputs it replaced were opened again)"
        if why is not None:
            await close_fds([k.release("reload refused") for _, k in fresh])
            raise ReloadFailed(f"{new.source}: {why}; the running config stays")
        return plan, {id(k) for _, k in fresh}

    # ------------------------------------------------------------ status
    def session_counters(self) -> dict[str, SessionCounters]:
        """Retired totals plus every ring's routes, summed in C with one call per ring, so
        status is one pass over the sessions however many rings there are."""
        total = sum_stats([r.routes for r in self.readers.values()], len(self.sessions))
        out: dict[str, SessionCounters] = {}
        for i, s in enumerate(self.sessions):
            c = dataclasses.replace(self.retired[s.name]) if s.name in self.retired else SessionCounters()
            c.add_words(total, i * STATS_WORDS)
            out[s.name] = c
        return out

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
        self.note_sink_errno()
        counters = self.session_counters()
        ready, why = self.readiness()
        head = {
            "ready": ready,
            "not_ready": why["reasons"],
            "instance": self.instance,
            "generation": self.generation,
            "last_reload_ok": self.last_reload_ok,
            "last_reload_error": self.last_reload_error,
            "config": self.config.source,
        }
        sessions = []
        errnos = dict(self.sink_errno)
        sinks = self.sinks
        for n, (s, fixed) in enumerate(zip(self.sessions, self._status_fixed), 1):
            sink = sinks.get(s.name)
            row = fixed.copy()
            row["output"] = {"type": s.output.type, "name": s.output.name,
                             "open": bool(sink and sink.is_open),
                             "error": sink.error if sink else "not opened",
                             "opens": sink.opens if sink else 0}
            row["counters"] = counters[s.name].as_dict()
            row["last_sink_error"] = _errno_text(errnos[s.name]) if s.name in errnos else None
            sessions.append(row)
            if chunk and n % chunk == 0:
                yield None
        yield {
            **head,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "sessions": sessions,
            "rings": [r.status() for r in self.readers.values()],
            "forwarders": _forwarders(self.config.daemon.runtime_dir),
            "ring_errors": dict(self.ring_errors),
        }

    def config_snapshot(self) -> dict[str, Any]:
        """What a producer needs: the sampling parameters per ingress interface."""
        return {
            "instance": self.instance,
            "generation": self.generation,
            "runtime_dir": str(self.config.daemon.runtime_dir),
            "sessions": [{"name": s.name, "id": s.id, "input": list(s.input), "rate": s.rate,
                          "run_length": s.run_length, "max_packet_length": s.max_packet_length}
                         for s in self.sessions],
            "interfaces": {i: s.id for s in self.sessions for i in s.input},
        }

    # ------------------------------------------------------------ health
    def health(self) -> tuple[bool, dict[str, Any]]:
        """Liveness: the loop turns, the daemon's tasks run, no ring is left undrained."""
        now = time.monotonic()
        problems = []
        lag = now - self.last_beat
        if lag > STALL:
            problems.append(f"event loop stalled: no heartbeat for {lag:.1f}s")
        for t in self.tasks:
            if t.done():
                exc = None if t.cancelled() else t.exception()
                problems.append(f"task {t.get_name()} ended: {exc!r}" if exc else f"task {t.get_name()} ended")
        for r in self.readers.values():
            idle = r.stalled(now)
            if idle:
                problems.append(f"ring {r.name}: records waiting, not drained for {idle:.1f}s")
        body: dict[str, Any] = {"status": "ok" if not problems else "fail", "problems": problems,
                                "rings": len(self.readers), "uptime_s": round(now - self.started, 3)}
        return not problems, body

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready: config applied, every session's output open, at least one ring attached."""
        reasons = []
        sessions: dict[str, str] = {}
        if self.stopping.is_set():
            reasons.append("stopping")
        if not self.applied:
            reasons.append("config not applied yet")
        for s in self.sessions:
            sink = self.sinks.get(s.name)
            if sink is not None and sink.is_open:
                sessions[s.name] = "ok"
            else:
                why = f"output {s.output.type} {s.output.name}: {sink.error if sink else 'not opened'}"
                sessions[s.name] = why
                reasons.append(f'session "{s.name}": {why}')
        if not self.readers:
            reasons.append(f"no ring attached (runtime_dir {self.config.daemon.runtime_dir})")
        body = {"status": "ready" if not reasons else "not ready", "reasons": reasons,
                "sessions": sessions, "rings": len(self.readers), "generation": self.generation,
                "last_reload_ok": self.last_reload_ok}
        if self.last_reload_error:
            body["last_reload_error"] = self.last_reload_error
        return not reasons, body

    def summary(self) -> str:
        """One line for systemd's STATUS= (shown by systemctl status)."""
        c = self.session_counters().values()
        open_ = sum(1 for s in self.sessions if (k := self.sinks.get(s.name)) and k.is_open)
        dropped = sum(x.dropped_no_output + x.dropped_sink_busy + x.dropped_sink_error + x.dropped_not_ip
                      for x in c)
        ring_full = sum(r.consumer.counters().dropped_ring_full_packets for r in self.readers.values())
        return (f"{len(self.sessions)} sessions, outputs open {open_}/{len(self.sessions)}, "
                f"{len(self.readers)} rings; mirrored {sum(x.mirrored_packets for x in c)}, "
                f"dropped {dropped} at outputs, {ring_full} ring_full")

    async def heartbeat(self) -> None:
        """Feeds liveness and systemd's watchdog from the event loop itself: if the loop
        stalls, no WATCHDOG=1 goes out and systemd restarts the daemon.  An unhealthy daemon
        (a task died, a ring is not drained) also stops feeding it."""
        n = self.notifier
        last_ping = last_status = 0.0
        while True:
            now = self.last_beat = time.monotonic()
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

    # ------------------------------------------------------------ lifecycle
    async def run(self, *, ready: Callable[[], None] | None = None,
                  drain_deadline: float = STOP_DEADLINE) -> None:
        """Run until SIGTERM/SIGINT.  Resources nest so that teardown runs in reverse:
        stop the tasks, stop accepting (control, HTTP), drain what the rings hold into the
        still-open outputs (bounded by ``drain_deadline``), close the outputs, unmap."""
        from mirrord.control import ControlServer
        from mirrord.http import HttpServer

        loop = asyncio.get_running_loop()
        rd = self.config.daemon.runtime_dir
        rd.mkdir(mode=0o770, parents=True, exist_ok=True)
        if why := rundir.check(rd):  # whoever can write it can replace control.sock
            raise OSError(errnomod.EPERM, why)
        if why := rundir.check_control_socket(self.config.daemon.control_socket, rd):  # the same, elsewhere
            raise OSError(errnomod.EPERM, why)
        self.raise_nofile()
        for sig, what in ((signal.SIGTERM, "stop"), (signal.SIGINT, "stop"), (signal.SIGHUP, "reload")):
            loop.add_signal_handler(sig, self._on_signal, what)
        try:
            async with contextlib.AsyncExitStack() as stack:
                stack.callback(self._close_rings)
                links = self.link_socket()  # bound first: no device appearing now is missed
                stack.callback(links.close)
                await self.open_outputs(self.sessions)
                stack.push_async_callback(self._close_sinks)
                stack.callback(self._drain_all, drain_deadline)
                if self.config.daemon.http.enabled:
                    await stack.enter_async_context(HttpServer(
                        self, self.config.daemon.http, self.registry, max_connections=self.client_caps[1],
                        timeout=self.config.daemon.client_timeout))
                await stack.enter_async_context(ControlServer(
                    self, max_connections=self.client_caps[0], timeout=self.config.daemon.client_timeout))
                self.tasks = [asyncio.create_task(self.watch_links(links), name="links"),
                              asyncio.create_task(self.housekeeping(), name="housekeeping"),
                              asyncio.create_task(self.heartbeat(), name="heartbeat")]
                stack.push_async_callback(_cancel, self.tasks)
                self.scan()
                self.applied = True
                log.info("event=started sessions=%d runtime_dir=%s control=%s http=%s", len(self.sessions),
                         rd, self.config.daemon.control_socket, self.config.daemon.http)
                self.notifier.ready(self.summary())
                if ready:
                    ready()
                stop = asyncio.create_task(self.stopping.wait())
                done, _ = await asyncio.wait([stop, *self.tasks], return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    if t is not stop and t.exception() is not None:
                        log.error("event=task_failed task=%s error=%r", t.get_name(), t.exception())
                        raise t.exception()  # type: ignore[misc]
                self.notifier.stopping(f"stopping: {self.summary()}")
                log.info("event=stopping")
        finally:
            for name, c in self.session_counters().items():
                log.info("event=session_final session=%s %s", name,
                         " ".join(f"{k}={v}" for k, v in c.as_dict().items()))
            log.info("event=stopped")
            self.notifier.close()

    def raise_nofile(self) -> None:
        """Raise the soft RLIMIT_NOFILE to the hard one (as most daemons do), then cap the
        control and HTTP clients so that, whatever they do, FD_RESERVE descriptors (plus
        FD_PER_SESSION per session) and half of the rest stay for outputs, rings and their
        reopening: an accept flood ends at the caps, never at EMFILE."""
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            want = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
                soft = want
            except (ValueError, OSError) as e:  # e.g. above fs.nr_open: keep the soft limit
                log.warning("event=nofile_not_raised soft=%d hard=%d reason=%r", soft, hard, str(e))
        from mirrord.control import ControlServer

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
            self.stopping.set()
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
            self.last_reload_ok, self.last_reload_error = False, f"internal error: {e!r}"
        finally:
            self.notifier.ready(self.summary())

    def _drain_all(self, deadline: float) -> None:
        """Shutdown: deliver what the rings hold now, for at most ``deadline`` seconds."""
        end = time.monotonic() + deadline
        total = 0
        for r in list(self.readers.values()):
            while time.monotonic() < end:
                n = r.drain_now(BUDGET * 16)
                total += n
                if n < BUDGET * 16:
                    break
        for r in self.readers.values():
            r.muted = True  # the outputs close next (off the loop): nothing drains into -1
        log.info("event=final_drain records=%d", total)
        self.log_sink_errors(time.monotonic(), force=True)

    def _close_rings(self) -> None:
        for r in list(self.readers.values()):
            r.close()
        log.info("event=rings_closed count=%d", len(self.readers))

    async def _close_sinks(self) -> None:
        fds = [self.release_sink(name, "stopped") for name in list(self.sinks)]
        await close_fds(fds)


def _pidfd_alive(pidfd: int) -> bool:
    p = select.poll()
    p.register(pidfd, select.POLLIN)  # readable once the process has exited
    return not p.poll(0)


def _producer_pidfd(fd: int, owner: int) -> tuple[int, str]:
    """A pidfd of the process a ring's header names as producer, or (-1, why not).

    The header is the file's to say, and a daemon run as root could take any process's
    descriptor with pidfd_getfd: the process must run as the file's owner (real and
    effective uid), checked on /proc while a pidfd holds it (alive after the read: the
    same process, not a reused pid).  A file owned by root can still name a root process;
    only root (or the daemon's user, in its trusted runtime directory) can make such a file."""
    try:
        pid = probe(f"/proc/self/fd/{fd}").producer_pid
    except OSError:
        return -1, ""  # the attach itself says what is wrong with the header
    if not 0 < pid <= 1 << 22:  # PID_MAX_LIMIT
        return -1, f"producer_pid {pid} is not a process id"
    try:
        pidfd = os.pidfd_open(pid)
    except OSError as e:
        return -1, f"producer pid {pid}: pidfd_open: {e.strerror}"
    try:
        with open(f"/proc/{pid}/status") as f:
            uids = next((line.split()[1:3] for line in f if line.startswith("Uid:")), [])
        if not _pidfd_alive(pidfd):
            raise ProcessLookupError(errnomod.ESRCH, "exited")
    except OSError as e:
        os.close(pidfd)
        return -1, f"producer pid {pid}: {e.strerror or e}"
    if uids != [str(owner)] * 2:
        os.close(pidfd)
        return -1, (f"producer pid {pid} runs as uid {'/'.join(uids) or '?'} (real/effective), not as the "
                    f"ring file's owner uid {owner}: its eventfd is not taken")
    return pidfd, ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return f"a file of mode 0o{mode:o}"


def _errno_text(e: int) -> str | None:
    return f"{errnomod.errorcode.get(e, str(e))}: {os.strerror(e)}" if e else None


def _forwarders(runtime_dir: Path) -> list[dict[str, Any]]:
    from mirrord.forward import read_statuses

    return read_statuses(runtime_dir)


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t
