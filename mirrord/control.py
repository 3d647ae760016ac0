"""The control socket: a Unix stream socket carrying length-prefixed msgpack messages.

Each message is a 4-byte big-endian length followed by that many bytes of msgpack, a map
with an "op" key.  Every request gets exactly one reply map with "ok".  Malformed,
oversized or unknown messages get an error reply; an oversized or undecodable frame also
closes that connection (the stream cannot be resynchronised).  The daemon never dies of
a message.  Spec: docs/control-protocol.md.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack

if TYPE_CHECKING:
    from mirrord.runtime import Daemon

log = logging.getLogger("mirrord.control")

MAX_MESSAGE = 1 << 20
_LEN = struct.Struct("!I")


class ProtocolError(ValueError):
    pass


def encode(msg: dict[str, Any]) -> bytes:
    body = msgpack.packb(msg, use_bin_type=True)
    return _LEN.pack(len(body)) + body


def decode(body: bytes) -> dict[str, Any]:
    try:
        msg = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as e:  # noqa: BLE001 - msgpack raises many kinds; all mean "malformed"
        raise ProtocolError(f"malformed msgpack: {str(e)[:200] or type(e).__name__}") from None
    if not isinstance(msg, dict):
        raise ProtocolError(f"a message must be a map, got {type(msg).__name__}")
    return msg


class ControlServer:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.path = Path(daemon.config.daemon.control_socket)
        self.server: asyncio.AbstractServer | None = None
        self.allowed = {0, os.geteuid(), *daemon.config.daemon.allowed_uids}

    async def __aenter__(self) -> ControlServer:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old = os.umask(0o177)  # created 0600, then set to the configured mode
        try:
            self.server = await asyncio.start_unix_server(self._client, path=str(self.path),
                                                          limit=MAX_MESSAGE + 4)
        finally:
            os.umask(old)
        os.chmod(self.path, self.daemon.config.daemon.control_mode)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 1.0)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        try:
            pid, uid, _ = struct.unpack("iII", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                               struct.calcsize("iII")))
            if uid not in self.allowed:
                log.warning("event=control_refused peer_pid=%d peer_uid=%d", pid, uid)
                # take (and ignore) what the peer sends first, so it reads the refusal
                # instead of a broken pipe
                with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
                    await asyncio.wait_for(reader.read(MAX_MESSAGE + 4), 1.0)
                writer.write(encode({"ok": False, "error": f"uid {uid} is not allowed"}))
                await writer.drain()
                return
            while True:
                try:
                    head = await reader.readexactly(4)
                except asyncio.IncompleteReadError:
                    return
                (n,) = _LEN.unpack(head)
                if n > MAX_MESSAGE:
                    writer.write(encode({"ok": False, "error": f"message of {n} bytes is larger than {MAX_MESSAGE}"}))
                    await writer.drain()
                    return
                try:
                    body = await reader.readexactly(n)
                except asyncio.IncompleteReadError:
                    return
                try:
                    reply = await self.handle(decode(body))
                except ProtocolError as e:
                    writer.write(encode({"ok": False, "error": str(e)}))
                    await writer.drain()
                    return
                writer.write(encode(reply))
                await writer.drain()
        except (ConnectionError, OSError):
            return
        except Exception as e:  # noqa: BLE001 - a bug in a handler must not kill the daemon
            log.exception("event=control_error error=%r", e)
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        op = msg.get("op")
        d = self.daemon
        if op == "status":
            return {"ok": True, "status": d.status()}
        if op == "config":
            return {"ok": True, "config": d.config_snapshot()}
        if op == "reload":
            ok, err = await d.reload()
            return {"ok": True, "generation": d.generation} if ok else {"ok": False, "error": err}
        if op == "register":
            path = msg.get("path")
            if not isinstance(path, str) or not path.startswith("/"):
                return {"ok": False, "error": 'register: "path" must be the absolute path of a ring file'}
            from mirrord.ring import RingError

            try:
                r = d.register(Path(path))
            except RingError as e:
                return {"ok": False, "error": f"register: {e.strerror}"}
            except OSError as e:
                return {"ok": False, "error": f"register: {path}: {e.strerror or e}"}
            return {"ok": True, "ring": r.name}
        if not isinstance(op, str):
            return {"ok": False, "error": f'"op" must be a string, got {type(op).__name__}'}
        return {"ok": False, "error": f"unknown op {op!r} (expected status, config, reload, register)"}


class ControlClient:
    """Blocking client for the CLI and tests."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(os.fspath(path))

    def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.sock.sendall(encode(msg))
        return self.read()

    def read(self) -> dict[str, Any]:
        head = self._exact(4)
        return decode(self._exact(_LEN.unpack(head)[0]))

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
