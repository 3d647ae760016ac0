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
    """Several forwarders seen as one list of bindings: the one made at start, then one more
    for each pair whose interfaces appeared later (mr_fwd__add_pair refuses a started
    forwarder; a forwarder of its own starts the new pair without stopping the others).

    A binding's number never changes: parts are only appended.  ``extend`` rebinds the
    lists whole, so another thread that took ``bindings`` once sees a consistent list."""

    def __init__(self, first: Forwarder) -> None:
        self.parts: list[Forwarder] = [first]
        self.bindings: list[tuple[str, str]] = list(first.bindings)
        self.queues: list[int] = list(first.queues)
        self._where: list[tuple[Forwarder, int]] = [(first, i) for i in range(len(first.bindings))]

    def extend(self, part: Forwarder) -> range:
        """Add a started part; returns the numbers its bindings got."""
        start = len(self.bindings)
        self._where = self._where + [(part, i) for i in range(len(part.bindings))]
        self.queues = self.queues + part.queues
        self.parts = self.parts + [part]
        self.bindings = self.bindings + part.bindings
        return range(start, len(self.bindings))

    def set_mirrors(self, binding: int, rules: Sequence[Rule]) -> None:
        part, i = self._where[binding]
        part.set_mirrors(i, rules)

    def rule_counters(self, binding: int) -> list[dict[str, int]]:
        part, i = self._where[binding]
        return part.rule_counters(i)

    def ring_fds(self, binding: int) -> tuple[int, int]:
        part, i = self._where[binding]
        return part.ring_fds(i)

    def ring_lost(self, binding: int) -> str | None:
        part, i = self._where[binding]
        return part.ring_lost(i)

    def counters(self, binding: int) -> BindingCounters:
        part, i = self._where[binding]
        return part.counters(i)

    def stop(self) -> None:
        for p in self.parts:
            p.stop()


__all__ = ["Forwarder", "Forwarders", "BindingCounters", "ForwarderError"]
