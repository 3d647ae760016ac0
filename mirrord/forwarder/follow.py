"""The forwarder follows the daemon: one reload reaches both.

``mirrord forward`` takes its sampling tables from the daemon's *accepted* configuration,
not from its own reading of the file: a thread asks the control socket's ``config``
operation every ``POLL`` seconds (one short request on one kept connection) and, when the
daemon's (instance, generation) changes, gives every binding the table of the session whose
``input`` is its ingress, plus a rule per VLAN input on that interface (tap.h,
mr_tap__set_rules: sub-interface first, then the parent).  A reload the daemon refuses leaves its generation alone, so it
changes nothing here either; a restarted daemon has a new ``instance`` token (its generation
starts again at 1), which both re-applies the tables and hands the rings over again
(``register`` with the ring's fd and eventfd as SCM_RIGHTS).

Errors talking to the daemon (no socket, EACCES, a refused register) never touch
forwarding: each distinct one is logged once with its errno, shown in the forwarder's
status, and retried with a bounded backoff.  The workers are C threads; this thread only
calls ``set_mirrors`` (a table swap) and the control socket.
"""
from __future__ import annotations

import contextlib
import errno as errnomod
import logging
import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from mirrord import rundir
from mirrord.protocol import ControlClient, ProtocolError

log = logging.getLogger("mirrord.forward")

POLL = 0.25          # seconds between two `config` requests (the daemon's idle timeout is >= 30 s)
TIMEOUT = 2.0        # a connect or a reply slower than this is an error: reconnect
BACKOFF_MIN = 0.25   # first retry after an error, doubled per failure ...
BACKOFF_MAX = 1.0    # ... up to this (a connect to a missing socket costs one syscall);
REGISTER_BACKOFF_MAX = 5.0  # a refused register is retried up to this far apart
# and a new control socket in place (a restarted daemon) is tried at once
U32 = (1 << 32) - 1

VID_MAX = 4094


class Rule(NamedTuple):
    """One rule of a binding's mirror table: the session of the frames with outer VLAN ID
    ``vid`` (0: the binding's other frames, its interface's own session)."""

    vid: int
    session_id: int
    rate: int
    run_length: int
    max_len: int
    filter: bytes = b""   # the session's classic BPF (mirrord.filter), b"": none
    session: str = ""     # its name and its input's label, for status (not for the fast path)
    input: str = ""
    filter_text: str = ""  # the filter's text, for status only ("": none)
    when_listened: bool = False  # copy only while someone listens to the output (ring header)


Table = tuple[Rule, ...]  # per binding: its rules, the default rule (vid 0) first if any
OFF: Table = ()


def rules_for(bindings: list[tuple[str, str]], entries: list[tuple[str, int, str, Rule]]) -> list[Table]:
    """Per binding, its table from (interface, vid, label, rule) per input of every session:
    the rule of (ingress, 0), else of an input whose label is the ingress (a VLAN device
    forwarded itself), then the rules of (ingress, vid) for each VLAN input on it."""
    by_key = {(i, v): r for i, v, _, r in entries}
    by_label = {lbl: r for _, v, lbl, r in entries if v}
    out = []
    for ingress, _ in bindings:
        default = by_key.get((ingress, 0)) or by_label.get(ingress)
        rules = [default._replace(vid=0)] if default else []
        rules += sorted(r for (i, v), r in by_key.items() if i == ingress and v)
        out.append(tuple(rules))
    return out


class Mirrors(Protocol):
    """What the follower needs of a Forwarder."""

    bindings: list[tuple[str, str]]

    def set_mirrors(self, binding: int, rules: Table) -> None: ...

    def ring_fds(self, binding: int) -> tuple[int, int]: ...  # copies: the follower closes them

    def ring_lost(self, binding: int) -> str | None: ...


def describe(e: BaseException) -> str:
    """``ECONNREFUSED: Connection refused`` (errno name first, so logs grep by it)."""
    if isinstance(e, OSError) and e.errno:
        return f"{errnomod.errorcode.get(e.errno, str(e.errno))}: {e.strerror or os.strerror(e.errno)}"
    if isinstance(e, TimeoutError):
        return f"no reply within {TIMEOUT:g}s"
    return str(e)[:200] or type(e).__name__


def tables(bindings: list[tuple[str, str]], snapshot: dict[str, Any]) -> list[Table]:
    """Per binding, the rules of the sessions whose inputs are on its ingress (rules_for).
    The snapshot comes over a socket: every field is checked, and a bad one raises
    ValueError naming it, before any binding is touched (a filter program too:
    check_program, bpf_validate)."""
    from mirrord.filter import check_program

    sessions = snapshot.get("sessions")
    if not isinstance(sessions, list):
        raise ValueError('config reply: "sessions" must be a list')
    entries: list[tuple[str, int, str, Rule]] = []
    for n, s in enumerate(sessions):
        if not isinstance(s, dict):
            raise ValueError(f"config reply: sessions[{n}] must be a map")
        vals = []
        for k in ("id", "rate", "run_length", "max_packet_length"):
            v = s.get(k)
            if type(v) is not int or not 0 <= v <= U32:
                raise ValueError(f'config reply: sessions[{n}]: "{k}" must be an integer 0..{U32}, got {v!r}')
            vals.append(v)
        program, text = s.get("filter_program", b""), s.get("filter", "")
        if (why := check_program(program)) is not None:
            raise ValueError(f'config reply: sessions[{n}]: "filter_program" {why}')
        if not isinstance(text, str):
            raise ValueError(f'config reply: sessions[{n}]: "filter" must be a string, got {type(text).__name__}')
        name = s.get("name") if isinstance(s.get("name"), str) else ""
        inputs = s.get("input")
        if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            raise ValueError(f'config reply: sessions[{n}]: "input" must be a list of interface names')
        resolved = [(i, 0, i) for i in inputs]
        if "inputs" in s:  # the daemon's resolution of VLAN inputs (older daemons: none)
            ri = s["inputs"]
            if not isinstance(ri, list) or not all(
                    isinstance(i, dict) and isinstance(i.get("interface"), str) and isinstance(i.get("name"), str)
                    and type(i.get("vlan")) is int and 0 <= i["vlan"] <= VID_MAX for i in ri):
                raise ValueError(f'config reply: sessions[{n}]: "inputs" must be a list of '
                                 f'{{interface, vlan 0..{VID_MAX}, name}}')
            resolved = [(i["interface"], i["vlan"], i["name"]) for i in ri]
        for iface, vid, label in resolved:
            entries.append((iface, vid, label, Rule(vid, *vals, program, session=name, input=label,
                                                  filter_text=text[:4096],
                                                  when_listened=s.get("when_listened") is True)))
    out = rules_for(bindings, entries)
    from mirrord._ring import lib as _ring
    MAX_VLAN_RULES, MAX_TABLE_INSNS = _ring.MR_TAP_MAX_VLAN_RULES, _ring.MR_TAP_MAX_TABLE_INSNS
    for (ingress, _), t in zip(bindings, out):  # the tap's bounds (tap.h), before any binding changes
        if len(t) > 1 + MAX_VLAN_RULES or (len(t) == 1 + MAX_VLAN_RULES and t[0].vid):
            raise ValueError(f"config reply: interface {ingress!r} has {sum(1 for r in t if r.vid)} VLAN rules, "
                             f"at most {MAX_VLAN_RULES}")
        if (n := sum(len(r.filter) // 8 for r in t)) > MAX_TABLE_INSNS:
            raise ValueError(f"config reply: the filters on interface {ingress!r} have {n} BPF instructions, "
                             f"at most {MAX_TABLE_INSNS}")
    return out


def untrusted_socket_dir(path: Path, runtime_dir: Path | None) -> str | None:
    """Why the control socket's directory cannot be trusted (mirrord.rundir's check, as the
    forwarder judges runtime_dir), or None: whoever can write it can bind the path first."""
    if runtime_dir is None:
        return None
    return rundir.check_control_socket(path, runtime_dir, group_owner_ok=True)


def untrusted_peer(sock: socket.socket, runtime_dir: Path | None) -> str | None:
    """Why the process listening on the control socket is not the daemon, or None.

    It must run as root, as the owner of the runtime directory (the daemon's user: the unit's
    /run/mirrord is mirrord:mirrord 0770, made by systemd for ``User=mirrord``; a daemon run
    by hand makes it itself) or as ourselves (a process of our uid could take our descriptors
    anyway).  Anyone else would be handed the rings, open for writing, and would set our
    sampling: nothing is sent to it."""
    pid, uid, _ = struct.unpack("iII", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                         struct.calcsize("iII")))
    allowed = {0, os.geteuid()}
    owner = "?"
    if runtime_dir is not None:
        with contextlib.suppress(OSError):
            owner = str(os.stat(runtime_dir).st_uid)
            allowed.add(int(owner))
    if uid in allowed:
        return None
    return (f"the process listening there (pid {pid}) runs as uid {uid}, not as root, the owner of "
            f"runtime_dir (uid {owner}) or our uid {os.geteuid()}: refused, nothing sent to it")


class Follower:
    """The forwarder's link to the daemon: follows its config, registers the rings."""

    def __init__(self, fwd: Mirrors, control_socket: Path, rings: list[Path | None],
                 initial: list[Table], runtime_dir: Path | None = None) -> None:
        self.fwd = fwd
        self.path = Path(control_socket)
        self.runtime_dir = runtime_dir      # its owner is the daemon's user (see trusted_peer)
        self.rings = rings                  # per binding: its ring file, None if refused at creation
        self.table = list(initial)          # per binding: what is in force now
        self._lock = threading.Lock()       # guards the status fields below
        self.instance: str | None = None    # the daemon whose config is in force (None: own file)
        self.generation: int | None = None
        self.connected = False
        self.error: str | None = None       # the latest error talking to the daemon
        self.registered_with: str | None = None  # instance every ring was handed to
        self.ring_state: list[dict[str, Any]] = [
            {"ring": p.name if p else None, "registered": False,
             "error": None if p else "no ring (refused at creation)"} for p in rings]
        self._conn: ControlClient | None = None
        self._ident: tuple[int, int] | None = None
        self._failed_ident: tuple[int, int] | None = None
        self._retry_at = 0.0
        self._backoff = BACKOFF_MIN
        self._reg_retry_at = 0.0
        self._reg_backoff = BACKOFF_MIN
        self._logged: set[str] = set()      # distinct errors logged since the last success
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._snap: dict[str, Any] | None = None  # the daemon's config in force (None: own file)
        # slots to take in: (binding numbers, their rings, their tables)
        self._pending: list[tuple[range, list[Path | None], list[Table]]] = []

    # -- lifecycle (main thread)
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mirrord-follow", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Ask the daemon now (SIGHUP), and retry at once what was backing off."""
        self._retry_at = self._reg_retry_at = 0.0
        self._wake.set()

    def adopt(self, numbers: range, rings: list[Path | None], initial: list[Table]) -> None:
        """A pair started (again: its interfaces appeared) and run.py placed its part in the
        Forwarders, at binding ``numbers``: the follow thread takes them in at its next step
        (the only thread that changes the tables), gives them the daemon's tables if they
        changed since ``initial`` was taken, and hands their rings over."""
        with self._lock:
            self._pending.append((numbers, rings, initial))
        self.wake()

    def release(self, numbers: range) -> None:
        """The pair of these bindings was torn down (an interface of it went away, run.py):
        at once, their rings are no longer shown nor handed over (the follow thread skips a
        None), and an adopt of them still pending is dropped, until ``adopt`` fills them
        again."""
        with self._lock:
            self._pending = [p for p in self._pending if p[0] != numbers]
            for b in numbers:
                if b < len(self.rings):
                    self.rings[b] = None
                    self.ring_state[b] = None

    def tables_now(self, bindings: list[tuple[str, str]]) -> list[Table] | None:
        """These bindings' tables from the daemon's config in force, None before one answered."""
        with self._lock:
            snap = self._snap
        return None if snap is None else tables(bindings, snap)

    def _take_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for numbers, rings, initial in pending:
            with self._lock:
                if (grow := numbers.stop - len(self.rings)) > 0:  # a new slot
                    self.rings += [None] * grow
                    self.table += [OFF] * grow
                    self.ring_state += [None] * grow
                if not self.fwd.live(numbers.start):  # type: ignore[attr-defined]
                    continue  # torn down again meanwhile (release came first)
                for b, p, t in zip(numbers, rings, initial):
                    self.rings[b], self.table[b] = p, t
                    self.ring_state[b] = {"ring": p.name if p else None, "registered": False,
                                          "error": None if p else "no ring (refused at creation)"}
                snap = self._snap
            if snap is not None:
                for b, t in zip(numbers, tables([self.fwd.bindings[b] for b in numbers], snap)):
                    if t != self.table[b]:
                        self.fwd.set_mirrors(b, t)
                        self.table[b] = t
            self.registered_with = None  # hand the new rings over at once

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(TIMEOUT + 2 * POLL)
        self._disconnect()

    def status(self) -> dict[str, Any]:
        with self._lock:
            live = [r for r in self.ring_state if r is not None]  # None: its pair is down
            registered = all(r["registered"] for r in live)
            errors = [f"{r['ring']}: {r['error']}" for r in live if r["error"]]
            return {
                "config_from": "daemon" if self.instance else "file",
                "daemon": {"instance": self.instance, "generation": self.generation,
                           "connected": self.connected, "error": self.error,
                           "control_socket": str(self.path)},
                "registered": registered,
                "register_error": "; ".join(errors) or (None if registered else self.error),
                "rings": [dict(r) for r in live],
            }

    # -- the thread
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as e:  # noqa: BLE001 - a bug here must not stop forwarding
                if (key := f"event=follow_error error={e!r}") not in self._logged:
                    self._logged.add(key)
                    log.exception("%s", key)
                self._disconnect()
            self._wake.wait(POLL)
            self._wake.clear()

    def step(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self._pending:
            self._take_pending()
        if self._conn is not None and self._socket_identity() not in (None, self._ident):
            self._disconnect()  # another socket in place: a restarted daemon
        if self._conn is None:
            if now < self._retry_at and self._socket_identity() in (None, self._failed_ident):
                return
            try:
                self._ident = self._socket_identity()
                why = untrusted_socket_dir(self.path, self.runtime_dir)
                if why is None:
                    self._conn = ControlClient(self.path, timeout=TIMEOUT)
                    why = untrusted_peer(self._conn.sock, self.runtime_dir)
            except OSError as e:
                self._disconnect()
                self._failed(now, f"control socket {self.path}: {describe(e)}")
                return
            if why is not None:  # nothing is sent to it: no config asked, no ring handed over
                self._disconnect()
                self._failed(now, f"control socket {self.path}: {why}", event="daemon_refused")
                return
        try:
            r = self._conn.request({"op": "config"})
            if not r.get("ok"):
                raise ValueError(f"config refused: {r.get('error')!r}")
            snap = r.get("config")
            if not isinstance(snap, dict):
                raise ValueError('config reply: "config" must be a map')
            instance, generation = snap.get("instance"), snap.get("generation")
            if not isinstance(instance, str) or type(generation) is not int:
                raise ValueError('config reply: "instance" (a string) and "generation" (an integer) '
                                 "are needed; is the daemon older than the forwarder?")
            if (instance, generation) != (self.instance, self.generation):
                self._apply(tables(self.fwd.bindings, snap), instance, generation, snap)
            if self.registered_with != instance or not all(r["registered"] for r in self.ring_state if r):
                if instance != self.registered_with:
                    self._reg_retry_at = 0.0
                    self._reg_backoff = BACKOFF_MIN
                if now >= self._reg_retry_at:
                    self._register(now, instance)
        except (OSError, ProtocolError, ValueError) as e:
            self._disconnect()
            self._failed(now, f"control socket {self.path}: {describe(e)}")
            return
        with self._lock:
            self.connected, self.error = True, None
        if self._logged:
            log.info("event=daemon_reachable control=%s instance=%s generation=%s", self.path,
                     self.instance, self.generation)
            self._logged.clear()
        self._backoff = BACKOFF_MIN

    def _apply(self, new: list[Table], instance: str, generation: int, snap: dict[str, Any]) -> None:
        changed = 0
        for b, t in enumerate(new[:len(self.table)]):  # bindings placed since: taken in by adopt
            if t != self.table[b]:
                self.fwd.set_mirrors(b, t)
                self.table[b] = t
                changed += 1
        with self._lock:
            self.instance, self.generation = instance, generation
            self._snap = snap
        log.info("event=config_applied instance=%s generation=%d bindings_changed=%d",
                 instance, generation, changed)

    def _register(self, now: float, instance: str) -> None:
        """Hand every ring to the daemon with its descriptors (SCM_RIGHTS): the daemon then
        needs neither the right to open the file nor to take our eventfd (pidfd_getfd needs
        ptrace rights).  Registering again is a no-op on the daemon's side."""
        assert self._conn is not None
        failed = False
        for i, path in enumerate(self.rings):
            if path is None or self.fwd.ring_lost(i):
                continue  # no ring (refused at creation, logged then), lost (logged by run()), pair down
            try:
                fds = [fd for fd in self.fwd.ring_fds(i) if fd >= 0]  # copies, ours to close
            except OSError:  # its pair went down since (run.py): released at the next step
                continue
            try:
                r = self._conn.request({"op": "register", "path": str(path)}, fds=fds)
            finally:
                for fd in fds:
                    os.close(fd)
            st = self.ring_state[i]
            if st is None:
                continue
            if r.get("ok"):
                with self._lock:
                    st["registered"], st["error"] = True, None
            else:
                failed = True
                reason = f"register refused: {r.get('error')}"
                with self._lock:
                    st["registered"], st["error"] = False, reason
                self._log_once(f"event=register_refused ring={path.name} reason={reason!r}")
        if failed:
            self._reg_retry_at = now + self._reg_backoff
            self._reg_backoff = min(self._reg_backoff * 2, REGISTER_BACKOFF_MAX)
            return
        self.registered_with = instance
        self._reg_backoff = BACKOFF_MIN
        log.info("event=registered instance=%s rings=%s", instance, [p.name for p in self.rings if p])

    def _failed(self, now: float, reason: str, event: str = "daemon_unreachable") -> None:
        with self._lock:
            self.connected, self.error = False, reason
            for st in self.ring_state:  # not known to the daemon we will find next
                if st is not None:
                    st["registered"] = False
        self.registered_with = None
        self._failed_ident = self._socket_identity()
        self._log_once(f"event={event} reason={reason!r} retry_in={self._backoff:.2f}s")
        self._retry_at = now + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    def _log_once(self, line: str) -> None:
        key = line.split(" retry_in=")[0]
        if key not in self._logged:
            self._logged.add(key)
            log.warning("%s", line)

    def _socket_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        with self._lock:
            self.connected = False
