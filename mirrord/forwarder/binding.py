"""The cffi binding of the reference AF_XDP forwarder (native/include/mirrord/forward.h).

Thin: validate, call, check the return code, convert.  C worker threads forward and mirror;
this module only creates the forwarder, adds pairs, gives bindings their ring and sampling
table, starts and stops the workers, and reads counters.  Importing it loads libxdp and
libbpf (the compiled module links them); ``mirrord.forwarder`` alone does not.
"""
from __future__ import annotations

import dataclasses
import errno
import os
import threading
from collections.abc import Sequence

from mirrord._xdp import ffi, lib
from mirrord.forwarder.follow import Rule
from mirrord.ring import ABI_VERSION

# The forwarder writes its rings with its own compiled copy of the ring code: a stale build
# of mirrord._xdp would write an ABI the daemon (mirrord._ring) refuses.
if lib.MR_RING_ABI_VERSION != ABI_VERSION:  # pragma: no cover - only with a stale build
    raise ImportError(f"mirrord._xdp writes ring ABI {lib.MR_RING_ABI_VERSION}, mirrord.ring "
                      f"expects {ABI_VERSION}: rebuild with 'pip install .'")

_ERRLEN = 256


class ForwarderError(OSError):
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class BindingCounters:
    """One binding's counters; the field names are those of struct mr_binding_counters
    (forward.h), the status file, `mirrord status` and the /metrics series."""

    rx_packets: int
    rx_bytes: int
    tx_packets: int
    tx_bytes: int
    dropped_tx_full: int
    dropped_tx_down: int
    mirror_sampled: int
    mirror_pushed: int
    mirror_dropped_ring_full: int
    mirror_dropped_no_ring: int
    mirror_table_generation: int
    # the kernel's own counts (XDP_STATISTICS): rx_* of the ingress socket, tx_* of the egress
    xdp_rx_dropped: int
    xdp_rx_invalid_descs: int
    xdp_rx_ring_full: int
    xdp_rx_fill_ring_empty_descs: int
    xdp_tx_invalid_descs: int
    xdp_tx_ring_empty_descs: int
    mirror_dropped_ring_lost: int
    mirror_filtered: int  # frames the session's filter rejected, before sampling
    mirror_skipped_no_listener: int  # sampled, not copied: nobody listens (when_listened)


_COUNTER_FIELDS = tuple(f.name for f in dataclasses.fields(BindingCounters))


class Forwarder:
    def __init__(self) -> None:
        p = ffi.new("struct mr_fwd **")
        rc = lib.mr_fwd__create(p)
        if rc:
            raise ForwarderError(-rc, os.strerror(-rc))
        self._f = p[0]
        self.bindings: list[tuple[str, str]] = []  # (ingress interface, egress interface)
        self.queues: list[int] = []
        self._cfg = ffi.new("struct mr_mirror_cfg *")

    def add_pair(self, a: str, b: str, queue: int = 0, *, generic: bool = True) -> None:
        err = ffi.new("char[]", _ERRLEN)
        rc = lib.mr_fwd__add_pair(self._f, a.encode(), b.encode(), queue, int(generic), err, _ERRLEN)
        if rc < 0:
            raise ForwarderError(-rc, ffi.string(err).decode())
        self.bindings += [(a, b), (b, a)]
        self.queues += [queue, queue]

    def set_ring(self, binding: int, path: str | os.PathLike[str], data_size: int = 0) -> None:
        err = ffi.new("char[]", _ERRLEN)
        name = f"{self.bindings[binding][0]}"[:15].encode()
        rc = lib.mr_fwd__set_ring(self._f, binding, os.fsencode(path), data_size, name, err, _ERRLEN)
        if rc < 0:
            raise ForwarderError(-rc, ffi.string(err).decode())

    def set_mirror(self, binding: int, session_id: int, rate: int = 1, run_length: int = 0,
                   max_len: int = 0, program: bytes = b"") -> None:
        """Swap the binding's mirror table (sampling and the capture filter ``program``,
        struct bpf_insn[] as libpcap compiled it, b"": none) whole, as one RCU-style swap: the
        worker takes no lock.  The program is copied; EINVAL if bpf_validate refuses it."""
        if len(program) % 8:
            raise ForwarderError(22, f"a filter program of {len(program)} bytes is not whole instructions")
        c = self._cfg
        c.session_id, c.rate, c.run_length, c.max_len = session_id, rate, run_length, max_len
        buf = ffi.from_buffer(program) if program else ffi.NULL
        c.filter, c.filter_len = buf, len(program) // 8
        try:
            rc = lib.mr_fwd__set_mirror(self._f, binding, c)
        finally:
            c.filter, c.filter_len = ffi.NULL, 0  # the C side copied it
        if rc < 0:
            raise ForwarderError(-rc, os.strerror(-rc))

    def set_mirrors(self, binding: int, rules: Sequence[Rule]) -> None:
        """Swap the binding's whole table: per rule (follow.Rule) its outer VLAN ID (0: the
        default rule), session, rate, run_length, max_len and filter (classic BPF)."""
        n = len(rules)
        if n > 1 + lib.MR_TAP_MAX_VLAN_RULES:
            raise ForwarderError(errno.EINVAL, f"{n - 1} VLAN rules on binding {binding}: at most "
                                               f"{lib.MR_TAP_MAX_VLAN_RULES}")
        cfgs = ffi.new("struct mr_mirror_cfg[]", max(n, 1))
        keep = []  # the filters' buffers live until the call returns (the tap copies them)
        for c, r in zip(cfgs, rules):
            c.vid, c.session_id, c.rate, c.run_length, c.max_len = r.vid, r.session_id, r.rate, r.run_length, r.max_len
            c.flags = lib.MR_TAP_RULE_WHEN_LISTENED if r.when_listened else 0
            if r.filter:
                buf = ffi.from_buffer(r.filter)
                keep.append(buf)
                c.filter, c.filter_len = buf, len(r.filter) // 8  # struct bpf_insn: 8 bytes
        rc = lib.mr_fwd__set_mirrors(self._f, binding, cfgs, n)
        if rc < 0:
            raise ForwarderError(-rc, os.strerror(-rc))

    def rule_counters(self, binding: int) -> list[dict[str, int]]:
        """The counters of the binding's rules in force, one per (vlan, session_id): seen,
        filtered, sampled, pushed and the drops, named as in status and /metrics."""
        cap = 1 + lib.MR_TAP_MAX_VLAN_RULES
        out = ffi.new("struct mr_tap_rule_counters[]", cap)
        n = lib.mr_fwd__rule_counters(self._f, binding, out, cap)
        if n < 0:
            raise ForwarderError(-n, os.strerror(-n))
        return [{"vlan": c.vid, "session_id": c.session_id, "seen": c.seen, "filtered": c.filtered,
                 "sampled": c.sampled, "pushed": c.pushed, "dropped_ring_full": c.dropped_ring_full,
                 "dropped_no_ring": c.dropped_no_ring, "dropped_ring_lost": c.dropped_ring_lost,
                 "skipped_no_listener": c.skipped_no_listener}
                for c in out[0:min(n, cap)]]

    def start(self) -> None:
        rc = lib.mr_fwd__start(self._f)
        if rc < 0:
            raise ForwarderError(-rc, os.strerror(-rc))

    def stop(self) -> None:
        lib.mr_fwd__stop(self._f)

    def ifindex(self, binding: int) -> int:
        """The ifindex of the binding's ingress, as it was when its socket was bound."""
        idx, q = ffi.new("int *"), ffi.new("uint32_t *")
        rc = lib.mr_fwd__binding_info(self._f, binding, idx, q)
        if rc < 0:
            raise ForwarderError(-rc, os.strerror(-rc))
        return idx[0]

    def ring_fds(self, binding: int) -> tuple[int, int]:
        """The ring's fd and eventfd (still owned by the forwarder)."""
        fds = ffi.new("int[2]")
        rc = lib.mr_fwd__ring_fds(self._f, binding, fds, fds + 1)
        if rc < 0:
            raise ForwarderError(-rc, os.strerror(-rc))
        return fds[0], fds[1]

    def ring_lost(self, binding: int) -> str | None:
        """Why the binding's ring was lost (its file truncated: mirroring into it stopped,
        forwarding goes on), or None while it is not (or the binding has no ring)."""
        buf = ffi.new("char[]", _ERRLEN)
        rc = lib.mr_fwd__ring_lost(self._f, binding, buf, _ERRLEN)
        return ffi.string(buf).decode() if rc > 0 else None

    def counters(self, binding: int) -> BindingCounters:
        c = ffi.new("struct mr_binding_counters *")
        lib.mr_fwd__counters(self._f, binding, c)
        return BindingCounters(*(getattr(c, k) for k in _COUNTER_FIELDS))

    def close(self) -> None:
        if self._f is not None:
            lib.mr_fwd__destroy(self._f)
            self._f = None

    def __enter__(self) -> Forwarder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Forwarders:
    """The forwarder of every pair seen as one list of bindings: each pair is forwarded by a
    Forwarder of its own (a "part"), made at start or when its interfaces appear (the
    missing-interface rule, run.py), torn down when one of them goes away and made again
    when it is back, without stopping the other pairs (mr_fwd__add_pair refuses a started
    forwarder; a part is its pair's whole XDP state: closing it detaches its programs).

    A pair owns a fixed range of binding numbers (a slot), taken the first time it starts
    and reused each time it starts again: the list grows to at most the pairs given, never
    with the flaps.  A slot whose pair is down is dead: ``live`` is False, status shows its
    bindings as "down" with the counts they had, a table set on it is kept by the follower
    only, ``ring_fds`` raises ENODEV.  Every call into a part happens under one lock, so a part is never closed under
    another thread's call (the follow thread sets tables and takes ring descriptors while
    the main thread tears a lost pair down).  A binding's counters go on across the parts
    of its slot: the final counts of each part torn down are carried into its slot's.
    ``bindings`` and ``queues`` are rebound whole, never changed in place."""

    _ADDED = tuple(f for f in _COUNTER_FIELDS if f != "mirror_table_generation")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pairs: list[tuple[str, str]] = []           # per slot: its pair
        self._slot_parts: list[Forwarder | None] = []    # per slot: its running part, None while down
        self._slot_range: list[range] = []               # per slot: its binding numbers
        self.bindings: list[tuple[str, str]] = []        # (ingress, egress) per binding number
        self.queues: list[int] = []
        self._where: list[tuple[Forwarder | None, int]] = []
        self._carried: list[dict[str, int]] = []         # per binding: counts of its torn-down parts

    @property
    def parts(self) -> list[Forwarder]:
        return [p for p in self._slot_parts if p is not None]

    def place(self, pair: tuple[str, str], part: Forwarder) -> range:
        """Put a started part in its pair's slot (a new slot the first time); returns the
        binding numbers it got."""
        with self._lock:
            if pair in self.pairs:
                k = self.pairs.index(pair)
                if self._slot_parts[k] is not None:
                    raise ForwarderError(errno.EBUSY, f"pair {pair[0]}:{pair[1]} is already forwarded")
                numbers = self._slot_range[k]
                if len(numbers) != len(part.bindings):
                    raise ForwarderError(errno.EINVAL, f"pair {pair[0]}:{pair[1]}: {len(part.bindings)} "
                                                       f"bindings, its slot has {len(numbers)}")
                where = list(self._where)
                for j, b in enumerate(numbers):
                    where[b] = (part, j)
                self._where = where
                self._slot_parts[k] = part
                return numbers
            start = len(self.bindings)
            numbers = range(start, start + len(part.bindings))
            self.pairs = self.pairs + [pair]
            self._slot_parts.append(part)
            self._slot_range.append(numbers)
            self._carried += [dict.fromkeys(self._ADDED, 0) for _ in numbers]
            self._where = self._where + [(part, j) for j in range(len(part.bindings))]
            self.queues = self.queues + part.queues
            self.bindings = self.bindings + part.bindings
            return numbers

    def remove(self, pair: tuple[str, str]) -> range:
        """Tear the pair's part down: its workers stop, its final counts go into its slot's,
        its sockets, XDP programs (their bpf_link goes with the last fd) and rings are
        closed, the ring files removed.  Returns the slot's binding numbers (now dead)."""
        with self._lock:
            k = self.pairs.index(pair)
            part, numbers = self._slot_parts[k], self._slot_range[k]
            if part is None:
                return numbers
            part.stop()  # the workers are joined: the counts below are final
            for j, b in enumerate(numbers):
                c = part.counters(j)
                for f in self._ADDED:
                    self._carried[b][f] += getattr(c, f)
            where = list(self._where)
            for b in numbers:
                where[b] = (None, 0)
            self._where = where
            self._slot_parts[k] = None
            part.close()
            return numbers

    def slot(self, pair: tuple[str, str]) -> range | None:
        """The pair's binding numbers, None if it never started."""
        with self._lock:
            return self._slot_range[self.pairs.index(pair)] if pair in self.pairs else None

    def live(self, binding: int) -> bool:
        return self._where[binding][0] is not None

    def _part(self, binding: int) -> tuple[Forwarder, int]:
        part, i = self._where[binding]
        if part is None:
            raise ForwarderError(errno.ENODEV, f"binding {binding}: its pair is down (an interface went away)")
        return part, i

    def set_mirrors(self, binding: int, rules: Sequence[Rule]) -> None:
        """A dead binding takes nothing: its next part gets the tables in force when it starts."""
        with self._lock:
            part, i = self._where[binding]
            if part is not None:
                part.set_mirrors(i, rules)

    def rule_counters(self, binding: int) -> list[dict[str, int]]:
        with self._lock:
            part, i = self._where[binding]
            return [] if part is None else part.rule_counters(i)

    def ring_fds(self, binding: int) -> tuple[int, int]:
        """Copies (dup) of the ring's fd and eventfd, the caller's to close: taken under the
        lock, they stay valid however soon the part is torn down."""
        with self._lock:
            part, i = self._part(binding)
            ring, efd = part.ring_fds(i)
            ring = os.dup(ring)
            try:
                return ring, os.dup(efd) if efd >= 0 else -1
            except OSError:
                os.close(ring)
                raise

    def ring_lost(self, binding: int) -> str | None:
        with self._lock:
            part, i = self._where[binding]
            return None if part is None else part.ring_lost(i)

    def counters(self, binding: int) -> BindingCounters:
        """The binding's counters across its slot's parts; while its pair is down, those of
        the parts torn down (so a final status still accounts for every frame)."""
        with self._lock:
            part, i = self._where[binding]
            carried = self._carried[binding]
            if part is None:
                return BindingCounters(**{f: carried.get(f, 0) for f in _COUNTER_FIELDS})
            c = part.counters(i)
            return dataclasses.replace(c, **{f: getattr(c, f) + carried[f] for f in self._ADDED})

    def stop(self) -> None:
        with self._lock:
            for p in self.parts:
                p.stop()

    def close(self) -> None:
        with self._lock:
            for k, p in enumerate(self._slot_parts):
                if p is not None:
                    p.close()
                    self._slot_parts[k] = None
            self._where = [(None, 0)] * len(self._where)


__all__ = ["Forwarder", "Forwarders", "BindingCounters", "ForwarderError"]
