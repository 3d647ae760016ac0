"""Thin binding over the C mirror ring (native/include/mirrord/ring.h) and its delivery to
outputs (drain.h), compiled into mirrord._ring (no libxdp: native/build_ring.py).

Validate, call, check the return code, convert.  The hot paths (push, peek/release,
drain into the routes' file descriptors) are single C calls; cffi releases the GIL around them.
"""
from __future__ import annotations

import dataclasses
import errno
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from mirrord._ring import ffi, lib

#: The ring ABI this wrapper was written against.  A stale build of the C module that
#: speaks another version is refused at import time rather than misread.
ABI_VERSION = 1
if lib.MR_RING_ABI_VERSION != ABI_VERSION:  # pragma: no cover - only with a stale build
    raise ImportError(
        f"mirrord._ring speaks ring ABI {lib.MR_RING_ABI_VERSION}, "
        f"mirrord.ring expects {ABI_VERSION}: rebuild with 'pip install .'"
    )

DEFAULT_DATA_SIZE: int = lib.MR_RING_DEFAULT_DATA
DEFAULT_MAX_FRAME: int = lib.MR_FRAME_DEFAULT
HEADER_SIZE: int = lib.MR_RING_HDR_SIZE
RECORD_HEADER_SIZE: int = lib.MR_REC_HDR_SIZE

DRAIN_WRITE: int = lib.MR_DRAIN_WRITE
DRAIN_WRITE_L3: int = lib.MR_DRAIN_WRITE_L3
DRAIN_SENDMMSG: int = lib.MR_DRAIN_SENDMMSG
DRAIN_ENCAP: int = lib.MR_DRAIN_ENCAP

_ERRLEN = 256


class RingError(OSError):
    """A ring could not be created or attached; the message names the reason."""


def _raise(rc: int, err: Any, what: str) -> None:
    msg = ffi.string(err).decode(errors="replace") or os.strerror(-rc)
    raise RingError(-rc, f"{what}: {msg}")


@dataclasses.dataclass(frozen=True, slots=True)
class RingCounters:
    """A snapshot of the counters in a ring's shared header.

    The producer's side always adds up: ``offered == pushed_packets + dropped_ring_full_packets``.
    """

    pushed_packets: int
    pushed_bytes: int
    dropped_ring_full_packets: int
    dropped_ring_full_bytes: int
    truncated_packets: int
    wakeups: int
    consumed_packets: int
    consumed_bytes: int
    corrupt_events: int
    corrupt_bytes: int
    attaches: int
    prod: int
    cons: int
    data_size: int
    max_frame: int
    producer_pid: int

    @property
    def offered(self) -> int:
        return self.pushed_packets + self.dropped_ring_full_packets

    @property
    def fill_bytes(self) -> int:
        """Bytes waiting in the ring (as read; bounded by data_size)."""
        return min((self.prod - self.cons) % (1 << 64), self.data_size)


def _counters(hdr: Any) -> RingCounters:
    c = ffi.new("struct mr_ring_counters *")
    lib.mr_ring__counters(hdr, c)
    return _convert(c)


def probe(path: str | os.PathLike[str]) -> RingCounters:
    """The counters of the ring at ``path``, read-only and without attaching to it."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO must not block
    try:
        c = ffi.new("struct mr_ring_counters *")
        err = ffi.new("char[]", _ERRLEN)
        rc = lib.mr_ring__probe(fd, c, err, _ERRLEN)
        if rc:
            _raise(rc, err, os.fspath(path))
        return _convert(c)
    finally:
        os.close(fd)


def _convert(c: Any) -> RingCounters:
    return RingCounters(
        pushed_packets=c.pushed_pkts,
        pushed_bytes=c.pushed_bytes,
        dropped_ring_full_packets=c.drop_full_pkts,
        dropped_ring_full_bytes=c.drop_full_bytes,
        truncated_packets=c.truncated_pkts,
        wakeups=c.wakeups,
        consumed_packets=c.consumed_pkts,
        consumed_bytes=c.consumed_bytes,
        corrupt_events=c.corrupt_events,
        corrupt_bytes=c.corrupt_bytes,
        attaches=c.attaches,
        prod=c.prod,
        cons=c.cons,
        data_size=c.data_size,
        max_frame=c.max_frame,
        producer_pid=c.producer_pid,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    """One drained copy (tests and tools; the daemon drains straight into fds)."""

    data: bytes
    wire_len: int
    ifindex: int
    session_id: int
    seq: int
    ts_ns: int
    truncated: bool


@dataclasses.dataclass(frozen=True, slots=True)
class DrainStats:
    """What happened to the copies sent to one output (counted in C, per route)."""

    packets: int = 0
    bytes: int = 0
    dropped_busy: int = 0       # EAGAIN/ENOBUFS: the output could not take it now
    dropped_error: int = 0      # any other send error (device down: EIO, ...)
    dropped_not_ip: int = 0     # TUN output and not IPv4/IPv6
    dropped_no_output: int = 0  # the output was missing
    truncated: int = 0
    last_errno: int = 0
    latency: tuple[int, ...] = ()  # delivered copies per LAT_BOUNDS_NS bucket (stamped ones)
    latency_sum_ns: int = 0


STATS_WORDS = ffi.sizeof("struct mr_drain_stats") // 8  # 64-bit words per route's counters
assert ffi.offsetof("struct mr_drain_stats", "last_errno") == (STATS_WORDS - 1) * 8, "mr_drain_stats layout"
#: ring-to-output delay buckets: upper bounds in ns (the last is +Inf), and where the counts
#: and their sum sit among a route's STATS_WORDS
LAT_BUCKETS: int = lib.MR_LAT_BUCKETS
LAT_BOUNDS_NS: tuple[float, ...] = tuple(
    float(lib.mr_lat__bound_ns(i)) if i < LAT_BUCKETS - 1 else float("inf") for i in range(LAT_BUCKETS))
LAT_WORD: int = ffi.offsetof("struct mr_drain_stats", "lat") // 8
LAT_SUM_WORD: int = ffi.offsetof("struct mr_drain_stats", "lat_sum_ns") // 8


def sum_stats(tables: Iterable[Routes], n: int) -> list[int]:
    """The counters of route tables of ``n`` rows each (one per ring) summed per row, one
    C call per table: ``STATS_WORDS`` integers per row in the order of ``struct
    mr_drain_stats`` (pkts, bytes, drop_busy, drop_error, drop_not_ip, drop_no_output,
    truncated, LAT_BUCKETS delay buckets from LAT_WORD and their sum at LAT_SUM_WORD; the
    last word is 0).  Status with thousands of sessions and hundreds of
    rings stays one pass over the sessions."""
    acc = ffi.new("struct mr_drain_stats[]", max(n, 1))
    for t in tables:
        if len(t) != n:
            raise ValueError(f"route table of {len(t)} rows, expected {n}")
        lib.mr_drain_stats__add(acc, t._stats, n)
    return ffi.unpack(ffi.cast("uint64_t *", acc), n * STATS_WORDS)


class Routes:
    """A drain route table: rows of (session_id, fd, mode) or (session_id, fd, mode,
    encap), fds changeable in place.

    session_id 0 takes every record; fd -1 means the output is missing (copies are
    counted as no_output).  ``encap`` (DRAIN_ENCAP) is an object with a ``ptr`` to its
    ``struct mr_encap``; the table keeps it alive.  The counters live in C memory and
    only grow.
    """

    def __init__(self, rows: list[tuple[int, ...]]) -> None:
        self._n = len(rows)
        self._routes = ffi.new("struct mr_route[]", max(self._n, 1))
        self._stats = ffi.new("struct mr_drain_stats[]", max(self._n, 1))
        self._keep: dict[int, Any] = {}  # the encaps the C routes point to
        for i, row in enumerate(rows):
            sid, fd, mode = row[:3]
            self.set(i, session_id=sid, fd=fd, mode=mode, encap=row[3] if len(row) > 3 else None)

    def __len__(self) -> int:
        return self._n

    def set(self, i: int, *, session_id: int | None = None, fd: int | None = None,
            mode: int | None = None, encap: Any = None) -> None:
        if not 0 <= i < self._n:
            raise IndexError(i)
        r = self._routes[i]
        if encap is not None:
            r.encap = encap.ptr
            self._keep[i] = encap
        if session_id is not None:
            r.session_id = session_id
        if fd is not None:
            r.fd = fd
        if mode is not None:
            if mode not in (DRAIN_WRITE, DRAIN_WRITE_L3, DRAIN_SENDMMSG, DRAIN_ENCAP):
                raise ValueError(f"mode {mode}: not a drain mode")
            if mode == DRAIN_ENCAP and r.encap == ffi.NULL:
                raise ValueError("mode DRAIN_ENCAP needs an encap")
            r.mode = mode

    def stats(self, i: int) -> DrainStats:
        s = self._stats[i]
        return DrainStats(s.pkts, s.bytes, s.drop_busy, s.drop_error, s.drop_not_ip,
                          s.drop_no_output, s.truncated, s.last_errno, tuple(s.lat), s.lat_sum_ns)

    def errno_routes(self) -> Iterator[int]:
        """The routes that have a last_errno, found in C (most tables have none)."""
        i = lib.mr_drain_stats__next_errno(self._stats, 0, self._n)
        while i < self._n:
            yield i
            i = lib.mr_drain_stats__next_errno(self._stats, i + 1, self._n)

    def take_errno(self, i: int) -> int:
        """The errno of route i's last sink error since the previous call, or 0."""
        s = self._stats[i]
        e, s.last_errno = s.last_errno, 0
        return e


class Producer:
    """The owning side of a ring: creates it and pushes copies.  Never blocks."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        data_size: int = 0,
        max_frame: int = 0,
        name: str = "",
    ) -> None:
        self._p = ffi.new("struct mr_prod *")
        self._meta = ffi.new("struct mr_meta *")
        err = ffi.new("char[]", _ERRLEN)
        cpath = os.fsencode(path) if path is not None else ffi.NULL
        rc = lib.mr_prod__create(
            self._p, cpath, data_size, max_frame, name.encode()[:15], err, _ERRLEN
        )
        if rc:
            _raise(rc, err, "cannot create ring")
        self.path = os.fspath(path) if path is not None else None
        self._open = True

    @property
    def fd(self) -> int:
        """The shared-memory fd (memfd or file) to pass to a consumer."""
        return self._p.fd

    @property
    def eventfd(self) -> int:
        return self._p.efd

    @property
    def lost(self) -> bool:
        """True once the ring's file was truncated under us: the mapping was replaced by
        zero pages (no SIGBUS), and nothing pushed since reaches a consumer."""
        return bool(lib.mr_prod__lost(self._p))

    def lost_reason(self) -> str:
        buf = ffi.new("char[]", _ERRLEN)
        lib.mr_prod__lost_reason(self._p, buf, _ERRLEN)
        return ffi.string(buf).decode()

    def push(
        self,
        frame: bytes | bytearray | memoryview,
        *,
        wire_len: int = 0,
        ifindex: int = 0,
        session_id: int = 0,
        ts_ns: int = 0,
    ) -> bool:
        """Push one copy; False when it was dropped because the ring is full or lost."""
        p = self._p
        m = self._meta
        m.wire_len = wire_len
        m.ifindex = ifindex
        m.session_id = session_id
        m.ts_ns = ts_ns
        return lib.mr_prod__push(p, ffi.from_buffer(frame), len(frame), m) == 0

    def listened(self, session_id: int) -> bool:
        """What the consumer says of session_id's output (ring header, line 6)."""
        return bool(lib.mr_prod__listened(self._p, session_id))

    def counters(self) -> RingCounters:
        return _counters(self._p.hdr)

    def close(self, *, unlink: bool = True) -> None:
        if self._open:
            self._open = False
            lib.mr_prod__destroy(self._p, int(unlink))

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Consumer:
    """The draining side.  Attaches to a ring by fd or by path and validates it."""

    #: eventfd argument: fetch the producer's eventfd with pidfd_getfd(2)
    FETCH_EVENTFD = -1
    #: eventfd argument: no eventfd (the caller polls)
    NO_EVENTFD = -2

    def __init__(self, fd: int, *, eventfd: int = NO_EVENTFD, batch: int = 256, max_data_size: int = 0) -> None:
        """``max_data_size``: refuse, before mapping it, a ring whose data area is larger
        (0: up to the ABI's 1 GiB)."""
        self._c = ffi.new("struct mr_cons *")
        err = ffi.new("char[]", _ERRLEN)
        rc = lib.mr_cons__attach_max(self._c, fd, eventfd, max_data_size, err, _ERRLEN)
        if rc:
            _raise(rc, err, "cannot attach ring")
        self._frames = ffi.new("struct mr_frame[]", batch)
        self._batch = batch
        self._corrupt = ffi.new("uint64_t *")
        self.totals = ffi.new("struct mr_drain_totals *")
        self._open = True

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, eventfd: int = NO_EVENTFD, **kw: Any) -> Consumer:
        # a symbolic link is refused (ELOOP), a FIFO does not block (and is refused)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as e:
            raise RingError(e.errno, f"{os.fspath(path)}: {e.strerror}") from None
        try:
            return cls(fd, eventfd=eventfd, **kw)
        except RingError as e:
            raise RingError(e.errno, f"{os.fspath(path)}: {e.strerror}") from None
        finally:
            os.close(fd)

    @property
    def eventfd(self) -> int:
        """The eventfd to wait on, or -1."""
        return self._c.efd

    @property
    def fd(self) -> int:
        """The ring's descriptor (owned by the consumer: fstat it, do not close it)."""
        return self._c.fd

    def drain(self, callback: Callable[[Record], object], budget: int = 1 << 30) -> int:
        """Hand up to ``budget`` records to ``callback`` (one C call per batch)."""
        done = 0
        frames = self._frames
        while done < budget:
            n = lib.mr_cons__peek(self._c, frames, min(self._batch, budget - done), self._corrupt)
            batch = [
                Record(
                    data=ffi.buffer(f.data, f.cap_len)[:],
                    wire_len=f.wire_len,
                    ifindex=f.ifindex,
                    session_id=f.session_id,
                    seq=f.seq,
                    ts_ns=f.ts_ns,
                    truncated=bool(f.flags & lib.MR_REC_F_TRUNCATED),
                )
                for f in (frames[i] for i in range(n))
            ]
            if lib.mr_cons__lost(self._c):
                break  # lost while copying: part of this batch may be the zeros that replaced it
            for r in batch:
                callback(r)
            lib.mr_cons__release(self._c)
            done += n
            if n < self._batch:
                break
        return done

    def records(self, budget: int = 1 << 30) -> Iterator[Record]:
        out: list[Record] = []
        self.drain(out.append, budget)
        return iter(out)

    def drain_routes(self, routes: Routes, budget: int = 256) -> int:
        """Send up to ``budget`` records to their sessions' outputs in one C call (GIL
        released).  Per-route counters accumulate in ``routes``, per-ring ones in
        ``self.totals``.  Returns the number of records taken from the ring."""
        rc = lib.mr_cons__drain(self._c, routes._routes, routes._stats, len(routes), budget,
                                self.totals)
        if rc == -errno.ENXIO:
            return 0  # the ring is lost (see ``lost``): the caller detaches it
        if rc < 0:
            raise OSError(-rc, os.strerror(-rc))
        return rc

    @property
    def lost(self) -> bool:
        """True once the ring's file was truncated (or a page of it could not be backed):
        the mapping was replaced by zero pages instead of a SIGBUS.  Detach it."""
        return bool(lib.mr_cons__lost(self._c))

    def lost_reason(self) -> str:
        """Why the ring was lost ("file truncated to 0 of 4198400 bytes"); "" if it was not."""
        buf = ffi.new("char[]", _ERRLEN)
        lib.mr_cons__lost_reason(self._c, buf, _ERRLEN)
        return ffi.string(buf).decode()

    def corruption(self) -> str:
        """Why this consumer last reset the ring, naming the field and the bound it broke
        ("record at data offset 4096: cap_len 70000 exceeds the ring's max_frame 9216");
        "" when it never did."""
        buf = ffi.new("char[]", _ERRLEN)
        lib.mr_cons__corruption(self._c, buf, _ERRLEN)
        return ffi.string(buf).decode()

    def prepare_sleep(self) -> bool:
        """True: sleep on the eventfd now.  False: records arrived, drain again."""
        return bool(lib.mr_cons__prepare_sleep(self._c))

    def set_listened(self, ids: list[int]) -> None:
        """Tell the producer which sessions' outputs someone listens to (the ring header's
        listened set, for when_listened sessions); more than fit: every session."""
        lib.mr_cons__set_listened(self._c, ffi.new("uint32_t[]", ids or [0]), len(ids))

    def counters(self) -> RingCounters:
        return _counters(self._c.hdr)

    def close(self) -> None:
        if self._open:
            self._open = False
            lib.mr_cons__detach(self._c)

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DrainSet:
    """Many rings drained by one C call (``mr_cons__drain_set``): the rings a consumer polls
    on a shared timer instead of sleeping on their eventfds (wake coalescing).

    Built over (consumer, routes) pairs; rebuild it when either changes.  ``drain`` returns
    the records taken and how many rings need a look (``look``): lost, a full budget, a new
    corruption event, or idle for ``idle_ns``.  Zero, the common case, costs no Python per ring.
    """

    def __init__(self, members: list[tuple[Consumer, Routes]], busy_ns: int) -> None:
        self._n = len(members)
        self._jobs = ffi.new("struct mr_drain_job[]", max(self._n, 1))
        self._keep = members  # the cffi memory the jobs point into
        self._look = ffi.new("unsigned *")
        for j, (c, r) in zip(self._jobs, members):
            j.c, j.routes, j.stats, j.totals, j.nroutes = c._c, r._routes, r._stats, c.totals, len(r)
            j.busy_ns = busy_ns
            j.corrupt = c.totals.corrupt

    def __len__(self) -> int:
        return self._n

    def drain(self, budget: int, now_ns: int, idle_ns: int) -> tuple[int, int]:
        total = lib.mr_cons__drain_set(self._jobs, self._n, budget, now_ns, idle_ns, self._look)
        return total, self._look[0]

    def result(self, i: int) -> tuple[int, int, int]:
        """(what the last drain returned, CLOCK_MONOTONIC ns it last found a record, the
        corruption count last looked at) of member i."""
        j = self._jobs[i]
        return j.result, j.busy_ns, j.corrupt

    def seen(self, i: int, *, busy_ns: int | None = None, corrupt: int | None = None) -> None:
        j = self._jobs[i]
        if busy_ns is not None:
            j.busy_ns = busy_ns
        if corrupt is not None:
            j.corrupt = corrupt


class TimerFd:
    """A CLOCK_MONOTONIC timerfd (non-blocking, one shot) with nanosecond resolution, for
    delays the event loop's own timers (1 ms in libuv) round away."""

    def __init__(self) -> None:
        fd = lib.timerfd_create(lib.CLOCK_MONOTONIC, lib.TFD_NONBLOCK | lib.TFD_CLOEXEC)
        if fd < 0:
            e = ffi.errno
            raise OSError(e, f"timerfd_create: {os.strerror(e)}")
        self.fd = fd
        self._spec = ffi.new("struct itimerspec *")

    def arm(self, delay_ns: int) -> None:
        """Fire once after delay_ns (at least 1 ns: 0 would disarm); rearming replaces."""
        v = self._spec.it_value
        delay_ns = max(delay_ns, 1)
        v.tv_sec, v.tv_nsec = divmod(delay_ns, 1_000_000_000)
        if lib.timerfd_settime(self.fd, 0, self._spec, ffi.NULL) < 0:
            e = ffi.errno
            raise OSError(e, f"timerfd_settime: {os.strerror(e)}")

    def clear(self) -> None:
        """Consume an expiry (after the fd was readable)."""
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
