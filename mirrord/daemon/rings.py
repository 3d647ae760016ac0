"""The rings the daemon drains: one ``RingReader`` per attached ring, and the registry of them.

A reader is woken by its ring's eventfd through the event loop and drains in budgeted
batches with one C call each, so a busy ring cannot starve the others or the control
socket.  The registry attaches rings (found in the runtime directory, named by a
producer, or handed over as descriptors), labels them uniquely, detaches them when their
producer is gone or their file is truncated, and never trusts a file it is shown.
Neither knows the daemon: the registry is given the runtime-dir settings, a function
that makes a route table over the current sessions, and one called with a route table
just before it is dropped (to fold its counters into the sessions).

(Over 400 lines: the reader and the registry that makes it are one concept, and half
of the registry is the checks that refuse hostile ring files, kept beside their use.)
"""
from __future__ import annotations

import asyncio
import contextlib
import errno as errnomod
import logging
import os
import select
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mirrord.config import DaemonSettings
from mirrord.daemon.poll import Poller
from mirrord.ring import HEADER_SIZE, Consumer, RingError, Routes, probe

log = logging.getLogger("mirrord")

BUDGET = 1024          # records per drain call before yielding to the event loop
CORRUPT_LOG_EVERY = 10.0  # seconds between two ring_corrupt log lines of one ring
MAX_RINGS_LOG_EVERY = 10.0  # seconds between two max_rings_reached lines of one kind
POLL_NO_EVENTFD = 0.02 # rings whose eventfd could not be fetched are polled this often
STALL = 10.0           # a ring with records not drained for this long makes /healthz fail


class RingReader:
    """One attached ring: eventfd-driven, budgeted drain into the sessions' outputs."""

    def __init__(self, path: Path, consumer: Consumer, key: tuple[int, int], routes: Routes,
                 on_lost: Callable[[RingReader], None], name: str | None = None) -> None:
        self.on_lost = on_lost  # called from a drain that found the ring's file truncated
        self.path = path
        self.name = name or path.name  # unique among attached rings: the label in status and /metrics
        self.consumer = consumer
        self.key = key
        self.routes = routes
        self.producer_pid = consumer.counters().producer_pid
        self.via = "scan"  # how it came: "scan" (found in runtime_dir) or "scm_rights" (registered)
        # a ring registered with its descriptors lives as long as the process that registered
        # it (SO_PEERCRED / SO_PEERPIDFD), not the pid its own header names
        self.peer_pid: int | None = None
        self.peer_pidfd = -1
        self._scheduled = False
        self._poll: asyncio.TimerHandle | None = None
        # the shared poll timer of wake coalescing (mirrord.daemon.poll), None when off
        # ([daemon] max_delay_us = 0); polled: in its set, need_wakeup left clear
        self.poller: Poller | None = None
        self.polled = False
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self._muted = False  # after the final drain: no more drains from the loop
        self.last_drain = time.monotonic()
        self._corrupt_logged = consumer.totals.corrupt  # corruption events already logged
        self._corrupt_log_at = -CORRUPT_LOG_EVERY
        if consumer.eventfd >= 0:
            self.loop.add_reader(consumer.eventfd, self._on_wake)
        self.schedule()

    @property
    def muted(self) -> bool:
        return self._muted

    @muted.setter
    def muted(self, v: bool) -> None:
        """After the final drain the outputs close: neither the loop nor the poll set drains
        this ring into them again."""
        self._muted = v
        if v and self.poller is not None:
            self.poller.forget(self)

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
            self.on_lost(self)
            return
        if self.consumer.totals.corrupt != self._corrupt_logged:
            self.log_corruption()
        if n >= BUDGET:
            self.schedule()  # more to do: yield to the loop first
        elif self.consumer.eventfd < 0:
            if self._poll is None or self._poll.cancelled():
                self._poll = self.loop.call_later(POLL_NO_EVENTFD, self._repoll)
        elif self.poller is not None and (n or self.polled):
            self.poller.park(self)  # polled again soon, with the other rings; no re-arm now
        elif not self.consumer.prepare_sleep():  # (an empty ring asleep, looked at by
            self.schedule()  # housekeeping, stays asleep) records arrived as we went to sleep

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
        last = self.last_drain
        if self.polled and self.poller is not None:
            last = max(last, self.poller.last_tick)
        idle = now - last
        if idle < STALL or self.consumer.counters().fill_bytes == 0:
            return 0.0
        return idle

    def producer_alive(self) -> bool:
        if self.peer_pidfd >= 0:
            return _pidfd_alive(self.peer_pidfd)
        return _pid_alive(self.producer_pid if self.peer_pid is None else self.peer_pid)

    def set_fd(self, index: int, fd: int) -> None:
        self.routes.set(index, fd=fd)

    def close(self) -> None:
        if self.closed:
            return
        if self.consumer.totals.corrupt != self._corrupt_logged:
            self.log_corruption(force=True)
        self.closed = True
        if self.poller is not None:
            self.poller.forget(self)
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
            "wakeups": k.wakeups,
            "polled": self.polled,
            "fill_bytes": k.fill_bytes,
            "data_size": k.data_size,
        }


class RingRegistry:
    """The attached rings by (st_dev, st_ino), and what is remembered of rings that went."""

    def __init__(self, settings: DaemonSettings, make_routes: Callable[[], Routes],
                 on_detach: Callable[[Routes], None]) -> None:
        self.settings = settings
        self.make_routes = make_routes
        self.on_detach = on_detach
        self.readers: dict[tuple[int, int], RingReader] = {}
        self.dead: set[tuple[int, int]] = set()  # rings whose producer is gone
        self.lost: set[tuple[int, int]] = set()  # rings whose file was truncated: never again
        self.ring_errors: dict[str, str] = {}    # ring file -> why it is not attached
        self._budget_logged: dict[str, float] = {}  # max_rings refusals: when last logged, per kind
        self.poller: Poller | None = None  # made with the first reader (it needs the running loop)
        self.listened: list[int] = []  # when_listened sessions someone listens to (ring header, line 6)

    def __len__(self) -> int:
        return len(self.readers)

    def __iter__(self) -> Iterator[RingReader]:
        return iter(list(self.readers.values()))

    def coalescing(self) -> dict[str, Any]:
        """Wake coalescing in status: the shared poll timer's state (max_delay_us 0: off)."""
        if self.poller is not None:
            return self.poller.status()
        return {"max_delay_us": self.settings.max_delay_us, "delay_us": 0, "polled_rings": 0, "ticks": 0,
                "records": 0, "sleeps": 0}

    def tables(self) -> list[Routes]:
        return [r.routes for r in self.readers.values()]

    def set_listened(self, ids: list[int]) -> None:
        """Tell every ring's producer which when_listened sessions are listened to now."""
        self.listened = list(ids)
        for r in self.readers.values():
            r.consumer.set_listened(self.listened)

    def set_fd(self, slot: int, fd: int) -> None:
        """A session's output changed: every reader's route of that session takes ``fd``
        (-1: no route keeps a closed, reusable descriptor number)."""
        for r in self.readers.values():
            r.set_fd(slot, fd)

    def drain_now(self) -> None:
        for r in self.readers.values():
            r.drain_now()

    def replace_routes(self) -> None:
        """New route tables for every reader (after a reload; the old ones' counters were
        folded by the caller), each reader scheduled."""
        for r in self.readers.values():
            r.routes = self.make_routes()
            r.schedule()
        if self.poller is not None:
            self.poller.invalidate()

    def tick(self) -> None:
        """Housekeeping: new ring files, stragglers and lost wake-ups, dead producers, rings
        whose file its producer removed."""
        self.scan()
        for r in list(self.readers.values()):
            r.schedule()
            if not r.producer_alive():
                self.dead.add(r.key)
                self.detach(r, "producer gone")
            elif why := _file_gone(r):
                self.detach(r, why)

    def close(self) -> None:
        for r in list(self.readers.values()):
            r.close()
        if self.poller is not None:
            self.poller.close()
        log.info("event=rings_closed count=%d", len(self.readers))

    def _ring_label(self, name: str) -> str:
        """The name itself, or ``name#2``, ``#3``... when an attached ring already has it
        (a ring moved away and a new one made under its name, a memfd registered twice):
        one label per ring, so /metrics never has two series for one label set.  A ring of
        that name whose producer is gone (a restarted forwarder's old ring, not yet seen by
        housekeeping) is detached first, with its final drain: the new ring takes the name."""
        for r in [r for r in self.readers.values() if r.name.partition("#")[0] == name]:
            if not r.producer_alive():
                self.detach(r, "producer gone")
            elif why := _file_gone(r):
                self.detach(r, why)
        taken = {r.name for r in self.readers.values()}
        k = 2
        label = name
        while label in taken:
            label, k = f"{name}#{k}", k + 1
        return label

    def _add_reader(self, key: tuple[int, int], path: Path, cons: Consumer, via: str = "") -> RingReader:
        r = RingReader(path, cons, key, self.make_routes(), self.ring_lost, self._ring_label(path.name))
        if self.settings.max_delay_us and self.poller is None:
            self.poller = Poller(self.settings.max_delay_us, BUDGET)
        r.poller = self.poller
        cons.set_listened(self.listened)
        r.via = via or "scan"
        self.readers[key] = r
        self.ring_errors.pop(str(path), None)
        log.info("event=ring_attached ring=%s producer_pid=%d eventfd=%s%s", r.name, r.producer_pid,
                 "yes" if cons.eventfd >= 0 else "no", f" via={via}" if via else "")
        return r

    def _check_runtime_dir(self, path: Path) -> Path:
        """Rings named by path are only taken from the runtime directory, by their name
        there: a symbolic link is not followed (it is refused when opened)."""
        rd = self.settings.runtime_dir.resolve()
        if not path.is_absolute() or path.parent.resolve() != rd or path.name in ("", ".", ".."):
            raise RingError(1, f"{path}: not in the runtime directory {rd}")
        return rd / path.name

    def _max_data(self) -> int:
        return self.settings.max_ring_size

    def _check_ring_budget(self, where: object, by_descriptor: bool) -> None:
        """At most ``max_rings`` rings of each origin: files of the runtime directory (whoever
        makes them can write that trusted directory) and rings passed by descriptor alone (any
        allowed control client): a flood of the second kind can neither fill the SIGBUS guard
        table (4096 slots, two budgets of at most 2048) nor lock the forwarder's rings out."""
        cap = self.settings.max_rings
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
        rd = self.settings.runtime_dir
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
            owners = {0, os.geteuid(), *self.settings.allowed_uids}
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
        self.on_detach(r.routes)  # its counters (and the final drain's errno) are kept
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
        rd = self.settings.runtime_dir
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


def _file_gone(r: RingReader) -> str | None:
    """Why a ring file is let go although its producer lives, or None: the file has no name
    left (st_nlink 0 on our own descriptor): its producer removed it when it closed the ring
    (the forwarder tearing down a pair whose interface went away), so nothing writes it any
    more; after the final drain (detach) its memory is freed.  A file moved away while its
    producer runs still has a name and stays; a memfd ring (never named) goes with its
    producer only."""
    if not r.path.is_absolute():
        return None
    try:
        return "ring file removed" if os.fstat(r.consumer.fd).st_nlink == 0 else None
    except OSError:
        return None


def _pidfd_alive(pidfd: int) -> bool:
    p = select.poll()
    p.register(pidfd, select.POLLIN)  # readable once the process has exited
    return not p.poll(0)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, and another user's
        return True
    return True


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


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return f"a file of mode 0o{mode:o}"
