"""What crosses processes: the control socket's framing and client, the forwarders' status files.

Framing: each message is a 4-byte big-endian length (``LEN``) followed by that many bytes
of msgpack, a map.  ``encode`` makes one frame, ``decode`` checks one body; a body that is
not msgpack, or not a map, is a ``ProtocolError`` naming why.  The daemon's server side
(``mirrord.daemon.control``) and every client (``mirrord status``, the forwarder's
follower, tests) share these.  Spec: docs/control-protocol.md.

Forwarder status: each ``mirrord forward`` process writes ``forwarder-<pid>.json`` into
the runtime directory; ``read_statuses`` is how the daemon reads them back.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import struct
from pathlib import Path
from typing import Any

import msgpack

MAX_MESSAGE = 1 << 20   # the largest body a peer accepts
LEN = struct.Struct("!I")
MAX_STATUS_FILE = 1 << 20  # a forwarder's status file larger than this is skipped


class ProtocolError(ValueError):
    pass


def encode(msg: dict[str, Any]) -> bytes:
    body = msgpack.packb(msg, use_bin_type=True)
    return LEN.pack(len(body)) + body


def decode(body: bytes) -> dict[str, Any]:
    try:
        msg = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as e:  # noqa: BLE001 - msgpack raises many kinds; all mean "malformed"
        raise ProtocolError(f"malformed msgpack: {str(e)[:200] or type(e).__name__}") from None
    if not isinstance(msg, dict):
        raise ProtocolError(f"a message must be a map, got {type(msg).__name__}")
    return msg


class ControlClient:
    """Blocking client for the CLI and tests."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(os.fspath(path))

    def request(self, msg: dict[str, Any], fds: list[int] | None = None) -> dict[str, Any]:
        """Send one message (with ``fds`` as SCM_RIGHTS, e.g. a ring's memfd and eventfd)."""
        data = encode(msg)
        if fds:
            socket.send_fds(self.sock, [data], fds)
        else:
            self.sock.sendall(data)
        return self.read()

    def read(self) -> dict[str, Any]:
        head = self._exact(4)
        return decode(self._exact(LEN.unpack(head)[0]))

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("control socket closed")
            buf += chunk
        return buf

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_small(path: Path) -> bytes | None:
    """A regular file's bytes, or None: never through a link, never waiting on a FIFO,
    never more than MAX_STATUS_FILE (anyone allowed into the runtime dir can put one)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with contextlib.closing(os.fdopen(fd, "rb")) as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_STATUS_FILE:
            return None
        return f.read(MAX_STATUS_FILE + 1)


def read_statuses(runtime_dir: Path) -> list[dict[str, Any]]:
    """Status files of the forwarders that are alive (for the daemon's status)."""
    out = []
    for p in sorted(runtime_dir.glob("forwarder-*.json")):
        try:
            data = _read_small(p)
            if data is None:
                continue
            st = json.loads(data)
            pid = int(st["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        try:
            os.kill(pid, 0)
        except PermissionError:  # alive, and another user's: a root forwarder seen by the daemon
            pass
        except OSError:
            continue
        if isinstance(st, dict):
            out.append(_sane_forwarder(st))
    return out


COUNTER_PREFIXES = ("rx_", "tx_", "xdp_", "mirror_", "dropped_")


def _count(v: Any) -> bool:
    return type(v) is int and v >= 0


def _sane_forwarder(st: dict[str, Any]) -> dict[str, Any]:
    """A forwarder's status file as the daemon passes it on: a file of another version, or
    one someone wrote by hand, keeps what is well formed.  A binding needs its labels
    (ingress, egress: strings; queue: a count); a counter that is not a count is left out
    (readers take a missing counter as 0); per-session rows likewise."""
    b_in = st.get("bindings")
    bindings = []
    for b in b_in if isinstance(b_in, list) else []:
        if not (isinstance(b, dict) and isinstance(b.get("ingress"), str) and isinstance(b.get("egress"), str)
                and _count(b.get("queue"))):
            continue
        # counters (numbers, or any key named as one) must be counts; other fields pass
        b = {k: v for k, v in b.items()
             if _count(v) or not (isinstance(v, (int, float)) or k.startswith(COUNTER_PREFIXES))}
        rows = b.get("sessions")
        b["sessions"] = [{k: v for k, v in r.items() if _count(v) or isinstance(v, str)}
                         for r in (rows if isinstance(rows, list) else []) if isinstance(r, dict)]
        bindings.append(b)
    st["bindings"] = bindings
    return st
