"""The reference fast path: an AF_XDP forwarder (C worker threads) driven from Python.

Thin binding over native/include/mirrord/forward.h plus the small runtime behind
``mirrord forward``: pairs of interfaces are forwarded both ways; each binding (the
interface a frame arrives on, and its queue) mirrors according to the session whose
``input`` lists that interface.  The tables follow the daemon's accepted configuration
(mirrord/follow.py polls its control socket), so one reload reaches both; the file given
with ``-c`` gives the control socket, the runtime directory and the tables in force until
a daemon answers.  SIGHUP asks the daemon at once; table swaps never stop the workers.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from mirrord import rundir
from mirrord._native import ffi, lib
from mirrord.config import Config, ConfigError
from mirrord.config import load as load_config
from mirrord.follow import OFF, Follower, Table
from mirrord.sdnotify import Notifier

log = logging.getLogger("mirrord.forward")
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
                   max_len: int = 0) -> None:
        c = self._cfg
        c.session_id, c.rate, c.run_length, c.max_len = session_id, rate, run_length, max_len
        rc = lib.mr_fwd__set_mirror(self._f, binding, c)
        if rc < 0:
            raise ForwarderError(-rc, os.strerror(-rc))

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


def file_tables(fwd: Forwarder, cfg: Config) -> list[Table]:
    """Per binding, the table of the session whose input is its ingress, from a config file
    (only at start, until the daemon answers: then its accepted config rules)."""
    by_if = {i: s for s in cfg.sessions for i in s.input}
    return [(s.id, s.rate, s.run_length, s.max_packet_length) if (s := by_if.get(ingress)) else OFF
            for ingress, _ in fwd.bindings]


def apply_config(fwd: Forwarder, cfg: Config) -> None:
    """Give every binding the mirror table of the session whose input is its ingress."""
    for b, t in enumerate(file_tables(fwd, cfg)):
        fwd.set_mirror(b, *t)


def status(fwd: Forwarder, cfg_path: Path, follower: Follower) -> dict[str, Any]:
    link = follower.status()
    return {
        "pid": os.getpid(),
        "config": str(cfg_path),
        # the daemon's (instance, generation) whose sampling is in force here; None until
        # a daemon answered (the tables then come from the file given with -c)
        "generation": link["daemon"]["generation"],
        "instance": link["daemon"]["instance"],
        **link,
        "bindings": [{"ingress": a, "egress": b, "queue": fwd.queues[i], **dataclasses.asdict(fwd.counters(i)),
                      "ring_lost": fwd.ring_lost(i)}  # None, or why its ring was lost
                     for i, (a, b) in enumerate(fwd.bindings)],
    }


def _error(msg: str) -> None:
    print(f"mirrord: {msg}", file=sys.stderr, flush=True)


def run(cfg_path: Path, pairs: list[tuple[str, str]], *, queues: tuple[int, ...] = (0,), generic: bool = True,
        ring_size: int = 0, status_every: float = 0.2, ready_file: Path | None = None) -> int:
    """``mirrord forward``: forward until SIGTERM/SIGINT.

    The sampling follows the daemon's accepted configuration (mirrord.follow); the file
    given with ``-c`` is read once, for the control socket, the runtime directory and the
    tables in force until a daemon answers.  SIGHUP asks the daemon at once.  Readiness:
    the line ``forwarding`` on stdout, READY=1 to $NOTIFY_SOCKET, and ``ready_file``
    created; errors go to stderr."""
    try:
        cfg = load_config(cfg_path)
    except ConfigError as e:
        _error(str(e))
        return 1
    rd = cfg.daemon.runtime_dir
    try:
        rd.mkdir(mode=0o770, parents=True, exist_ok=True)
    except OSError as e:
        _error(f"runtime_dir {rd}: {e.strerror}")
        return 1
    if why := rundir.check(rd, group_owner_ok=True):  # others could swap control.sock or rings
        _error(why)
        return 1
    flags = {"reload": False, "stop": False}
    signal.signal(signal.SIGHUP, lambda *_: flags.__setitem__("reload", True))
    signal.signal(signal.SIGTERM, lambda *_: flags.__setitem__("stop", True))
    signal.signal(signal.SIGINT, lambda *_: flags.__setitem__("stop", True))
    status_path = rd / f"forwarder-{os.getpid()}.json"
    notifier = Notifier()
    with Forwarder() as fwd:
        try:
            for q in queues:  # one worker per (pair, queue)
                for a, b in pairs:
                    fwd.add_pair(a, b, q, generic=generic)
            rings = []
            for i, (ingress, _) in enumerate(fwd.bindings):
                q = queues[i // (2 * len(pairs))]
                rings.append(_make_ring(fwd, i, rd / f"{ingress}-q{q}.ring", ring_size))
            initial = file_tables(fwd, cfg)
            for b, t in enumerate(initial):
                fwd.set_mirror(b, *t)
            fwd.start()
        except ForwarderError as e:
            _error(f"forward: {e.strerror}")
            return 1
        follower = Follower(fwd, cfg.daemon.control_socket, rings, initial, runtime_dir=rd)
        follower.step()  # a daemon that is up already gives its config before we say ready
        follower.start()
        status_failed = False
        try:
            _write_atomic(status_path, status(fwd, cfg_path, follower))
        except OSError:
            pass
        log.info("event=forwarding pairs=%s rings=%s", pairs, [p.name for p in rings if p is not None])
        if ready_file is not None:  # before the line: whoever waits on either finds both
            try:
                _write_atomic(ready_file, {"pid": os.getpid(), "status": str(status_path)})
            except OSError as e:
                log.warning("event=ready_file_failed path=%s reason=%r", ready_file, e.strerror)
        lost_logged: set[int] = set()
        print("forwarding", flush=True)
        notifier.ready(f"forwarding {', '.join(f'{a}<->{b}' for a, b in pairs)}")
        try:
            while not flags["stop"]:
                if flags["reload"]:
                    flags["reload"] = False
                    log.info("event=reload_requested action=ask_daemon control=%s", cfg.daemon.control_socket)
                    follower.wake()
                try:
                    _write_atomic(status_path, status(fwd, cfg_path, follower))
                except OSError as e:  # runtime dir removed (daemon stopped): forwarding goes on
                    if not status_failed:
                        log.warning("event=status_write_failed path=%s reason=%r", status_path, e.strerror)
                    status_failed = True
                else:
                    status_failed = False
                _log_lost_rings(fwd, rings, lost_logged)
                time.sleep(status_every)
        finally:
            notifier.stopping()
            follower.close()
            fwd.stop()
            _log_lost_rings(fwd, rings, lost_logged)  # lost since the last tick
            final = status(fwd, cfg_path, follower)
            status_path.unlink(missing_ok=True)
            if ready_file is not None:
                with contextlib.suppress(OSError):
                    ready_file.unlink()
            notifier.close()
            print(json.dumps(final), flush=True)
    return 0


def _make_ring(fwd: Forwarder, binding: int, path: Path, size: int) -> Path | None:
    """The binding's ring, or None when it cannot be created (no room in the runtime
    directory, say): that binding forwards without mirroring, its copies counted as
    mirror_dropped_no_ring.  Forwarding wins."""
    try:
        fwd.set_ring(binding, path, size)
    except ForwarderError as e:
        log.warning("event=ring_refused ring=%s reason=%r", path.name, e.strerror)
        return None
    return path


def _log_lost_rings(fwd: Forwarder, rings: list[Path | None], logged: set[int]) -> None:
    """One line per ring that was lost (its file truncated under us)."""
    for i, path in enumerate(rings):
        if path is not None and i not in logged and (why := fwd.ring_lost(i)):
            log.warning("event=ring_lost ring=%s reason=%r", path.name, why)
            logged.add(i)


def _write_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def read_statuses(runtime_dir: Path) -> list[dict[str, Any]]:
    """Status files of the forwarders that are alive (for the daemon's status)."""
    out = []
    for p in sorted(runtime_dir.glob("forwarder-*.json")):
        try:
            st = json.loads(p.read_text())
            pid = int(st["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        try:
            os.kill(pid, 0)
        except PermissionError:  # alive, and another user's: a root forwarder seen by the daemon
            pass
        except OSError:
            continue
        out.append(st)
    return out


__all__ = ["Forwarder", "BindingCounters", "ForwarderError", "apply_config", "file_tables", "run",
           "read_statuses"]
