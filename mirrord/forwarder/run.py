"""``mirrord forward``: the process around the reference AF_XDP forwarder (binding.py).

Pairs of interfaces are forwarded both ways by C worker threads; each binding (the
interface a frame arrives on, and its queue) mirrors according to the session whose
``input`` lists that interface.  The tables follow the daemon's accepted configuration
(follow.py polls its control socket), so one reload reaches both; the file given with
``-c`` gives the control socket, the runtime directory and the tables in force until a
daemon answers.  This module is the process: signals (SIGHUP asks the daemon at once,
SIGTERM/SIGINT stop), readiness (a line on stdout, sd_notify, a ready file), the status
file in the runtime directory, and the loop that refreshes it.  Table swaps never stop
the workers.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from mirrord import rundir
from mirrord.config import Config, ConfigError
from mirrord.config import load as load_config
from mirrord.forwarder.binding import Forwarder, ForwarderError, Forwarders
from mirrord.forwarder.follow import Follower, Rule, Table, rules_for
from mirrord.sdnotify import Notifier

log = logging.getLogger("mirrord.forward")


def file_tables(fwd: Forwarder, cfg: Config) -> list[Table]:
    """Per binding, the rules of the sessions whose inputs are on its ingress (its own and
    its VLAN inputs'), from a config file (only at start, until the daemon answers: then
    its accepted config rules)."""
    return rules_for(fwd.bindings, [
        (i.interface, i.vlan, i.name, Rule(i.vlan, s.id, s.rate, s.run_length, s.max_packet_length,
                                           s.filter_program, s.name, i.name, s.filter, s.when_listened))
        for s in cfg.sessions for i in s.ingress])


def apply_config(fwd: Forwarder, cfg: Config) -> None:
    """Give every binding the mirror table of the sessions whose inputs are on its ingress."""
    for b, t in enumerate(file_tables(fwd, cfg)):
        fwd.set_mirrors(b, t)


def rule_status(fwd: Forwarder, b: int, table: Table) -> list[dict[str, Any]]:
    """Per (binding, session): the rule in force and its own counters (the tap's, exact per
    rule; a rule's counters restart when its (vlan, session) leaves the table)."""
    live = {(c["vlan"], c["session_id"]): c for c in fwd.rule_counters(b)}
    return [{"input": r.input, "session": r.session, **live.get((r.vid, r.session_id), {
        "vlan": r.vid, "session_id": r.session_id})} for r in table if r.session_id]


def status(fwd: Forwarders, cfg_path: Path, follower: Follower, waiting: Any = ()) -> dict[str, Any]:
    link = follower.status()
    bindings = fwd.bindings  # taken once (rebound whole when a pair takes a new slot)
    table = list(follower.table)
    rows = []
    for i, (a, b) in enumerate(bindings):
        live = fwd.live(i)
        # placed, not taken in by the follower yet: no table; a pair that is down: none in force
        t = table[i] if live and i < len(table) else ()
        rows.append({"ingress": a, "egress": b, "queue": fwd.queues[i],
                     # "down": its pair waits for an interface that went away (counts as they were)
                     "state": "forwarding" if live else "down", **dataclasses.asdict(fwd.counters(i)),
                     "filter": next((r.filter_text for r in t if r.vid == 0), ""),  # in force ("": none)
                     "ring_lost": fwd.ring_lost(i),  # None, or why its ring was lost
                     "sessions": rule_status(fwd, i, t)})
    return {
        "pid": os.getpid(),
        "config": str(cfg_path),
        # the daemon's (instance, generation) whose sampling is in force here; None until
        # a daemon answered (the tables then come from the file given with -c)
        "generation": link["daemon"]["generation"],
        "instance": link["daemon"]["instance"],
        **link,
        # counters go on across a pair's restarts (an interface deleted and made again)
        "bindings": rows,
        # pairs not forwarded (yet, or again): an interface of theirs does not exist (they
        # start when it does); "error": why the last start failed, tried again later
        "waiting": [{"pair": f"{a}:{b}", "missing": missing, "error": err}
                    for (a, b), (missing, err) in dict(waiting).items()],
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
    # A pair with an interface that does not exist yet is not an error: it is logged, waits,
    # and is forwarded (and mirrored) as soon as its interfaces exist (_start_late); a pair
    # whose interface goes away (or is made again) is torn down and waits again (_lose).
    waiting: dict[tuple[str, str], tuple[list[str], str | None]] = {}
    for a, b in pairs:
        if missing := _missing(a, b):
            waiting[(a, b)] = (missing, None)
            log.warning("event=pair_waiting pair=%s:%s missing=%s reason='no such interface: forwarded and "
                        "mirrored as soon as it exists'", a, b, ",".join(missing))
    present = [p for p in pairs if p not in waiting]
    fwds = Forwarders()
    started: dict[tuple[str, str], tuple[int, int]] = {}  # pair -> the ifindexes its part bound
    try:
        rings: list[Path | None] = []
        initial: list[Table] = []
        for pair in present:  # a part per pair: one pair's teardown never touches another's
            part, prings, ptables = _start_pair(pair, None, cfg, queues, rd, ring_size, generic)
            fwds.place(pair, part)
            started[pair] = _bound(part)
            rings += prings
            initial += ptables
    except ForwarderError as e:
        fwds.close()
        _error(f"forward: {e.strerror}")
        return 1
    with contextlib.closing(fwds):
        follower = Follower(fwds, cfg.daemon.control_socket, rings, initial, runtime_dir=rd)
        follower.step()  # a daemon that is up already gives its config before we say ready
        follower.start()
        status_failed = False
        try:
            _write_atomic(status_path, status(fwds, cfg_path, follower, waiting))
        except OSError:
            pass
        log.info("event=forwarding pairs=%s rings=%s", present, [p.name for p in rings if p is not None])
        if ready_file is not None:  # before the line: whoever waits on either finds both
            try:
                _write_atomic(ready_file, {"pid": os.getpid(), "status": str(status_path)})
            except OSError as e:
                log.warning("event=ready_file_failed path=%s reason=%r", ready_file, e.strerror)
        lost_logged: set[int] = set()
        print("forwarding", flush=True)
        notifier.ready(f"forwarding {', '.join(f'{a}<->{b}' for a, b in present)}"
                       + (f"; waiting for {', '.join(f'{a}<->{b}' for a, b in waiting)}" if waiting else ""))
        retry_at: dict[tuple[str, str], float] = {}
        try:
            while not flags["stop"]:
                if flags["reload"]:
                    flags["reload"] = False
                    log.info("event=reload_requested action=ask_daemon control=%s", cfg.daemon.control_socket)
                    follower.wake()
                for pair, bound in list(started.items()):  # one if_nametoindex per name and tick
                    if why := _gone(pair, bound):
                        _lose(pair, why, fwds, follower, started, waiting, lost_logged)
                for pair in list(waiting):
                    if time.monotonic() >= retry_at.get(pair, 0.0) and not _missing(*pair):
                        _start_late(pair, waiting, retry_at, started, fwds, follower, cfg, queues, rd, ring_size,
                                    generic, lost_logged)
                try:
                    _write_atomic(status_path, status(fwds, cfg_path, follower, waiting))
                except OSError as e:  # runtime dir removed (daemon stopped): forwarding goes on
                    if not status_failed:
                        log.warning("event=status_write_failed path=%s reason=%r", status_path, e.strerror)
                    status_failed = True
                else:
                    status_failed = False
                _log_lost_rings(fwds, follower.rings, lost_logged)
                time.sleep(status_every)
        finally:
            notifier.stopping()
            follower.close()
            fwds.stop()
            _log_lost_rings(fwds, follower.rings, lost_logged)  # lost since the last tick
            final = status(fwds, cfg_path, follower, waiting)
            status_path.unlink(missing_ok=True)
            if ready_file is not None:
                with contextlib.suppress(OSError):
                    ready_file.unlink()
            notifier.close()
            print(json.dumps(final), flush=True)
    return 0


RETRY_LATE = 5.0  # seconds before a pair whose interfaces exist but failed to start is tried again


def _missing(a: str, b: str) -> list[str]:
    missing = []
    for name in (a, b):
        try:
            socket.if_nametoindex(name)
        except OSError:
            missing.append(name)
    return missing


def _bound(part: Forwarder) -> tuple[int, int]:
    """The ifindexes of the pair's two interfaces as its sockets were bound (bindings 0, 1)."""
    return part.ifindex(0), part.ifindex(1)


def _gone(pair: tuple[str, str], bound: tuple[int, int]) -> str | None:
    """Why a started pair's sockets are dead, or None: an interface of it no longer exists,
    or its name is another device now (deleted and made again: a new ifindex, as a container
    or VM restart does).  Two if_nametoindex per pair and tick: no netlink socket to keep
    and resynchronise, and a delete and re-create between two ticks is still seen (the
    kernel gives the new device a new index)."""
    for name, idx in zip(pair, bound):
        try:
            now = socket.if_nametoindex(name)
        except OSError:
            return f"{name}: no such interface"
        if now != idx:
            return f"{name}: made again (ifindex {idx} -> {now})"
    return None


def _lose(pair: tuple[str, str], why: str, fwds: Forwarders, follower: Follower, started: dict,
          waiting: dict, lost_logged: set[int]) -> None:
    """Tear the pair's part down (its sockets, XDP programs and rings: the ring files are
    removed, and the daemon lets a ring go once its file is gone, after a final drain) and
    put the pair back to waiting; the other pairs forward on."""
    numbers = fwds.remove(pair)
    follower.release(numbers)
    lost_logged.difference_update(numbers)
    del started[pair]
    waiting[pair] = (_missing(*pair), None)
    log.warning("event=pair_lost pair=%s:%s reason=%r action='forwarded and mirrored again as soon as it exists'",
                *pair, why)


def _start_pair(pair: tuple[str, str], follower: Follower | None, cfg: Config, queues: tuple[int, ...],
                rd: Path, ring_size: int, generic: bool) -> tuple[Forwarder, list[Path | None], list[Table]]:
    """A started forwarder of the pair's own (one worker per queue), each binding with its
    ring and the tables in force (the daemon's, else the file's)."""
    part = Forwarder()
    try:
        for q in queues:
            part.add_pair(*pair, q, generic=generic)
        rings = [_make_ring(part, i, rd / f"{ingress}-q{part.queues[i]}.ring", ring_size)
                 for i, (ingress, _) in enumerate(part.bindings)]
        initial = (follower.tables_now(part.bindings) if follower else None) or file_tables(part, cfg)
        for b, t in enumerate(initial):
            part.set_mirrors(b, t)
        part.start()
    except ForwarderError:
        part.close()
        raise
    return part, rings, initial


def _start_late(pair: tuple[str, str], waiting: dict, retry_at: dict, started: dict, fwds: Forwarders,
                follower: Follower, cfg: Config, queues: tuple[int, ...], rd: Path, ring_size: int,
                generic: bool, lost_logged: set[int]) -> None:
    """The interfaces of a waiting pair exist (again): a forwarder of its own forwards it in
    its slot (the same binding numbers each time), with the tables of the config in force;
    the follower then follows and registers it like the others.  A failure is logged once
    per reason and tried again after RETRY_LATE seconds."""
    try:
        part, rings, initial = _start_pair(pair, follower, cfg, queues, rd, ring_size, generic)
    except ForwarderError as e:
        missing, was = waiting[pair]
        if e.strerror != was:
            log.warning("event=pair_failed pair=%s:%s reason=%r retry_in=%gs", *pair, e.strerror, RETRY_LATE)
        waiting[pair] = (missing, e.strerror)
        retry_at[pair] = time.monotonic() + RETRY_LATE
        return
    numbers = fwds.place(pair, part)
    started[pair] = _bound(part)
    lost_logged.difference_update(numbers)
    del waiting[pair]
    follower.adopt(numbers, rings, initial)
    log.info("event=pair_started pair=%s:%s rings=%s", *pair, [p.name for p in rings if p is not None])


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


def _log_lost_rings(fwd: Forwarders, rings: list[Path | None], logged: set[int]) -> None:
    """One line per ring that was lost (its file truncated under us)."""
    for i, path in enumerate(rings):
        if path is not None and i not in logged and (why := fwd.ring_lost(i)):
            log.warning("event=ring_lost ring=%s reason=%r", path.name, why)
            logged.add(i)


def _write_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


__all__ = ["apply_config", "file_tables", "run"]
