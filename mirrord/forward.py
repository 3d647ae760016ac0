"""The reference fast path: an AF_XDP forwarder (C worker threads) driven from Python.

Thin binding over native/include/mirrord/forward.h plus the small runtime behind
``mirrord forward``: pairs of interfaces are forwarded both ways; each binding (the
interface a frame arrives on, and its queue) mirrors according to the session whose
``input`` lists that interface, taken from the daemon's own configuration file (one
source of truth).  SIGHUP re-reads the file and swaps the per-binding mirror tables
without stopping the workers.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from mirrord._native import ffi, lib
from mirrord.config import Config, ConfigError
from mirrord.config import load as load_config

log = logging.getLogger("mirrord.forward")
_ERRLEN = 256


class ForwarderError(OSError):
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class BindingCounters:
    rx_packets: int
    rx_bytes: int
    tx_packets: int
    tx_bytes: int
    dropped_tx_full: int
    mirror_sampled: int
    mirror_pushed: int
    mirror_dropped_ring_full: int
    mirror_dropped_no_ring: int
    mirror_table_generation: int


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

    def counters(self, binding: int) -> BindingCounters:
        c = ffi.new("struct mr_binding_counters *")
        lib.mr_fwd__counters(self._f, binding, c)
        return BindingCounters(c.rx_pkts, c.rx_bytes, c.tx_pkts, c.tx_bytes, c.drop_tx_full,
                               c.mirror_sampled, c.mirror_pushed, c.mirror_drop_ring_full,
                               c.mirror_drop_no_ring, c.cfg_generation)

    def close(self) -> None:
        if self._f is not None:
            lib.mr_fwd__destroy(self._f)
            self._f = None

    def __enter__(self) -> Forwarder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def apply_config(fwd: Forwarder, cfg: Config) -> None:
    """Give every binding the mirror table of the session whose input is its ingress."""
    by_if = {i: s for s in cfg.sessions for i in s.input}
    for b, (ingress, _) in enumerate(fwd.bindings):
        s = by_if.get(ingress)
        if s is None:
            fwd.set_mirror(b, 0)
        else:
            fwd.set_mirror(b, s.id, s.rate, s.run_length, s.max_packet_length)


def _control_identity(cfg: Config) -> tuple[int, int] | None:
    try:
        st = os.stat(cfg.daemon.control_socket)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _register(fwd: Forwarder, cfg: Config, rings: list[Path]) -> bool:
    """Hand every ring to the daemon with its descriptors (SCM_RIGHTS): the daemon then
    needs neither the right to open the file nor to take our eventfd (pidfd_getfd needs
    ptrace rights).  Returns False when no daemon answered; the caller retries when the
    control socket appears or changes (a restarted daemon), and registering twice is a
    no-op on the daemon's side."""
    from mirrord.control import ControlClient

    try:
        with ControlClient(cfg.daemon.control_socket, timeout=2.0) as c:
            for i, path in enumerate(rings):
                r = c.request({"op": "register", "path": str(path)}, fds=list(fwd.ring_fds(i)))
                if not r.get("ok"):
                    log.warning("event=register_refused ring=%s reason=%r", path.name, r.get("error"))
    except OSError:
        return False  # no daemon (yet): it finds the files when it starts, and we retry
    return True


def status(fwd: Forwarder, cfg_path: Path, generation: int) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "config": str(cfg_path),
        "generation": generation,
        "bindings": [{"ingress": a, "egress": b, "queue": fwd.queues[i], **dataclasses.asdict(fwd.counters(i))}
                     for i, (a, b) in enumerate(fwd.bindings)],
    }


def run(cfg_path: Path, pairs: list[tuple[str, str]], *, queues: tuple[int, ...] = (0,), generic: bool = True,
        ring_size: int = 0, status_every: float = 0.2) -> int:
    """``mirrord forward``: forward until SIGTERM/SIGINT; SIGHUP reloads the mirror tables."""
    try:
        cfg = load_config(cfg_path)
    except ConfigError as e:
        print(f"mirrord: {e}", flush=True)
        return 1
    rd = cfg.daemon.runtime_dir
    rd.mkdir(parents=True, exist_ok=True)
    flags = {"reload": False, "stop": False}
    signal.signal(signal.SIGHUP, lambda *_: flags.__setitem__("reload", True))
    signal.signal(signal.SIGTERM, lambda *_: flags.__setitem__("stop", True))
    signal.signal(signal.SIGINT, lambda *_: flags.__setitem__("stop", True))
    status_path = rd / f"forwarder-{os.getpid()}.json"
    generation = 1
    with Forwarder() as fwd:
        try:
            for q in queues:  # one worker per (pair, queue)
                for a, b in pairs:
                    fwd.add_pair(a, b, q, generic=generic)
            rings = []
            for i, (ingress, _) in enumerate(fwd.bindings):
                q = queues[i // (2 * len(pairs))]
                path = rd / f"{ingress}-q{q}.ring"
                fwd.set_ring(i, path, ring_size)
                rings.append(path)
            apply_config(fwd, cfg)
            fwd.start()
        except ForwarderError as e:
            print(f"mirrord: forward: {e.strerror}", flush=True)
            return 1
        registered_with = _control_identity(cfg) if _register(fwd, cfg, rings) else None
        status_failed = False
        log.info("event=forwarding pairs=%s rings=%s", pairs, [p.name for p in rings])
        print("forwarding", flush=True)
        try:
            while not flags["stop"]:
                if flags["reload"]:
                    flags["reload"] = False
                    try:
                        cfg = load_config(cfg_path)
                        apply_config(fwd, cfg)
                        generation += 1
                        log.info("event=reload_applied generation=%d", generation)
                    except ConfigError as e:
                        log.error("event=reload_refused reason=%r", str(e))
                try:
                    _write_atomic(status_path, status(fwd, cfg_path, generation))
                except OSError as e:  # runtime dir removed (daemon stopped): forwarding goes on
                    if not status_failed:
                        log.warning("event=status_write_failed path=%s reason=%r", status_path, e.strerror)
                    status_failed = True
                else:
                    status_failed = False
                ident = _control_identity(cfg)
                if ident is not None and ident != registered_with:  # a (new) daemon is up
                    registered_with = ident if _register(fwd, cfg, rings) else None
                time.sleep(status_every)
        finally:
            fwd.stop()
            final = status(fwd, cfg_path, generation)
            status_path.unlink(missing_ok=True)
            print(json.dumps(final), flush=True)
    return 0


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


__all__ = ["Forwarder", "BindingCounters", "ForwarderError", "apply_config", "run", "read_statuses"]
