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
import stat
import struct
from pathlib import Path
from typing import Any, Protocol

from mirrord.config import DaemonSettings
from mirrord.protocol import LEN, MAX_MESSAGE, ProtocolError, decode, encode
from mirrord.ring import RingError

log = logging.getLogger("mirrord.control")

MAX_BUFFERED = 8 << 20  # unfinished messages of all connections together
MAX_PATH = 4096
BUSY_LOG_EVERY = 10.0   # seconds between two control_busy lines


class Ring(Protocol):
    name: str  # its label in status and /metrics


class Service(Protocol):
    """What the control socket asks of the daemon."""

    @property
    def generation(self) -> int: ...
    async def status_async(self) -> dict[str, Any]: ...
    def config_snapshot(self) -> dict[str, Any]: ...
    async def reload(self) -> tuple[bool, str | None]: ...
    def register(self, path: Path) -> Ring: ...
    def register_fds(self, name: str, ring_fd: int, eventfd: int, path: Path | None = None, *,
                     peer: tuple[int, int] | None = None) -> Ring: ...


class ControlServer:
    """Serves the control socket on the event loop.

    Built on the raw socket (sock_accept, recvmsg when readable, sock_sendall) rather than
    asyncio streams, because a producer's "register" may carry its ring's memfd and
    eventfd as SCM_RIGHTS ancillary data, which streams would silently discard.
    """

    MAX_FDS = 2

    def __init__(self, service: Service, settings: DaemonSettings, *, max_connections: int = 64,
                 timeout: float = 5.0) -> None:
        self.service = service
        self.path = Path(settings.control_socket)
        self.mode = settings.control_mode
        self.sock: socket.socket | None = None
        self.allowed = {0, os.geteuid(), *settings.allowed_uids}
        self.tasks: set[asyncio.Task[None]] = set()
        self._accepting: asyncio.Task[None] | None = None
        # bounded per client: at most max_connections at once, each closed when it sends
        # nothing for `timeout` s or does not finish a message within `timeout` s of its
        # first byte; unfinished input of all of them together at most MAX_BUFFERED bytes
        self.max_connections = max_connections
        self.timeout = timeout
        self.buffered = 0
        self.refused = 0     # connections closed at once: over the cap
        self.timed_out = 0   # connections closed for idling or a message not finished in time
        self._busy_logged = (0, -BUSY_LOG_EVERY)

    async def __aenter__(self) -> ControlServer:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # created with the configured mode by bind itself (a socket's mode is 0777 & ~umask):
        # no chmod by path afterwards, which would follow a link put there in between
        old = os.umask(0o777 & ~self.mode)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        sock.listen(64)
        sock.setblocking(False)
        self.sock = sock
        self._accepting = asyncio.create_task(self._accept_loop(), name="control")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in [self._accepting, *self.tasks]:
            if t is not None:
                t.cancel()
        for t in [self._accepting, *self.tasks]:
            if t is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        if self.sock is not None:
            self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.sock is not None
        while True:
            try:
                conn, _ = await loop.sock_accept(self.sock)
            except OSError as e:  # EMFILE and friends: back off, never die
                log.warning("event=control_accept_failed reason=%r", e.strerror)
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            if len(self.tasks) >= self.max_connections:
                self._refuse(conn)
                continue
            t = asyncio.create_task(self._client(conn))
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)

    def _refuse(self, conn: socket.socket) -> None:
        """Over the cap: one error reply if the socket takes it now, and closed at once."""
        self.refused += 1
        with contextlib.suppress(OSError):
            conn.send(encode({"ok": False, "error": f"too many control connections (at most "
                                                   f"{self.max_connections}); try again"}))
        conn.close()
        now = asyncio.get_running_loop().time()
        seen, at = self._busy_logged
        if now - at >= BUSY_LOG_EVERY:
            log.warning("event=control_busy refused=%d max_connections=%d", self.refused - seen,
                        self.max_connections)
            self._busy_logged = (self.refused, now)

    async def _recv(self, conn: socket.socket) -> tuple[bytes, list[int], bool]:
        """Wait for data; returns (bytes, received fds, ancillary data truncated)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                data, anc, flags, _ = conn.recvmsg(1 << 16, socket.CMSG_SPACE(4 * self.MAX_FDS))
            except (BlockingIOError, InterruptedError):
                fut = loop.create_future()
                loop.add_reader(conn.fileno(), lambda: fut.done() or fut.set_result(None))
                try:
                    await fut
                finally:
                    loop.remove_reader(conn.fileno())
                continue
            fds: list[int] = []
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    n = len(cdata) // 4
                    fds += struct.unpack(f"{n}i", cdata[:4 * n])
            return data, fds, bool(flags & socket.MSG_CTRUNC)

    async def _send(self, conn: socket.socket, msg: dict[str, Any]) -> None:
        """A reply, given at most `timeout` seconds to leave (a peer that does not read
        cannot hold the connection open)."""
        await asyncio.wait_for(asyncio.get_running_loop().sock_sendall(conn, encode(msg)), self.timeout)

    async def _client(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        fds: list[int] = []
        buf = bytearray()
        try:
            pid, uid, _ = struct.unpack("iII", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                               struct.calcsize("iII")))
            refused = uid not in self.allowed
            if refused:
                log.warning("event=control_refused peer_pid=%d peer_uid=%d", pid, uid)
            deadline = loop.time() + self.timeout  # for the next message, from its first byte
            while True:
                try:
                    data, got, truncated = await asyncio.wait_for(self._recv(conn),
                                                                  max(0.0, deadline - loop.time()))
                except (asyncio.TimeoutError, TimeoutError):
                    self.timed_out += 1
                    if buf:  # a message was begun: say why it is dropped (idle ones just close)
                        await self._send(conn, {"ok": False, "error": f"message not complete within "
                                                                      f"{self.timeout:g}s ({len(buf)} bytes received)"})
                    return
                fds += got
                if refused:
                    # answer once, after the peer's first send, so it reads the refusal
                    await self._send(conn, {"ok": False, "error": f"uid {uid} is not allowed"})
                    return
                if not data:
                    return
                if truncated or len(fds) > self.MAX_FDS:
                    await self._send(conn, {"ok": False, "error": f"at most {self.MAX_FDS} file descriptors per message"})
                    return
                if self.buffered + len(data) > MAX_BUFFERED:
                    await self._send(conn, {"ok": False, "error": f"too much unfinished control input "
                                                                  f"(at most {MAX_BUFFERED} bytes in all); try again"})
                    return
                if not buf:
                    deadline = loop.time() + self.timeout  # a message begins: it has this long
                buf += data
                self.buffered += len(data)
                while len(buf) >= 4:
                    (n,) = LEN.unpack_from(buf)
                    if n > MAX_MESSAGE:
                        await self._send(conn, {"ok": False, "error": f"message of {n} bytes is larger than {MAX_MESSAGE}"})
                        return
                    if len(buf) < 4 + n:
                        break
                    body = bytes(buf[4:4 + n])
                    del buf[:4 + n]
                    self.buffered -= 4 + n
                    try:
                        msg = decode(body)
                    except ProtocolError as e:
                        await self._send(conn, {"ok": False, "error": str(e)})
                        return
                    mine, fds = fds, []  # descriptors travel with the message they came with
                    try:
                        reply = await self.handle(msg, mine, peer=conn)
                    except Exception as e:  # noqa: BLE001 - a bug in a handler must not kill the daemon
                        log.exception("event=control_error op=%r error=%r", msg.get("op"), e)
                        reply = {"ok": False, "error": f"internal error: {type(e).__name__}"}
                    finally:
                        for fd in mine:
                            os.close(fd)
                    await self._send(conn, reply)
                    deadline = loop.time() + self.timeout
        except (ConnectionError, OSError, asyncio.TimeoutError, TimeoutError):
            return
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a bug here must not kill the daemon
            log.exception("event=control_error error=%r", e)
        finally:
            self.buffered -= len(buf)
            for fd in fds:
                os.close(fd)
            conn.close()

    async def handle(self, msg: dict[str, Any], fds: list[int] | None = None,
                     peer: socket.socket | None = None) -> dict[str, Any]:
        """One request, one reply.  ``fds`` are closed by the caller afterwards.  ``peer``:
        the connection it came on (a ring passed by descriptor follows its sender's life)."""
        fds = fds or []
        op = msg.get("op")
        d = self.service
        if op != "register" and fds:
            return {"ok": False, "error": f"op {op!r} takes no file descriptors"}
        if op == "status":
            return {"ok": True, "status": await d.status_async()}
        if op == "config":
            return {"ok": True, "config": d.config_snapshot()}
        if op == "reload":
            ok, err = await d.reload()
            return {"ok": True, "generation": d.generation} if ok else {"ok": False, "error": err}
        if op == "register":
            path = msg.get("path")
            if "path" in msg and (why := _bad_path(path)):
                return {"ok": False, "error": f'register: "path": {why}'}
            name = msg.get("name")
            if fds and "path" not in msg and (not isinstance(name, str) or not 0 < len(name) <= 64
                                              or "/" in name or not name.isprintable()):
                return {"ok": False, "error": 'register: "name" must be 1-64 printable characters without "/"'}
            if fds and (why := _bad_ring_fd(fds[0]) or (len(fds) > 1 and _bad_eventfd(fds[1]))):
                return {"ok": False, "error": f"register: {why}"}
            sender = _peer_process(peer) if fds and peer is not None else None
            try:
                if fds and isinstance(path, str):
                    # a named ring whose descriptors come along (the daemon may not be
                    # allowed to open the file, or to take the producer's eventfd)
                    r = d.register_fds(Path(path).name, fds[0], fds[1] if len(fds) > 1 else -1,
                                       path=Path(path), peer=sender)
                elif fds:
                    assert isinstance(name, str)
                    r = d.register_fds(name, fds[0], fds[1] if len(fds) > 1 else -1, peer=sender)
                else:
                    path = msg.get("path")
                    if not isinstance(path, str) or not path.startswith("/"):
                        return {"ok": False,
                                "error": 'register: "path" must be the absolute path of a ring file, '
                                         "or pass the ring's memfd (and eventfd) with SCM_RIGHTS"}
                    r = d.register(Path(path))
            except RingError as e:
                return {"ok": False, "error": f"register: {e.strerror}"}
            except OSError as e:
                where = f"{e.filename}: " if e.filename else ""
                return {"ok": False, "error": f"register: {where}{e.strerror or e}"}
            finally:
                if sender is not None and sender[1] >= 0:
                    os.close(sender[1])
            return {"ok": True, "ring": r.name}
        if not isinstance(op, str):
            return {"ok": False, "error": f'"op" must be a string, got {type(op).__name__}'}
        return {"ok": False, "error": f"unknown op {op!r} (expected status, config, reload, register)"}


SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)  # Linux 6.5; Python 3.11 lacks the name


def _peer_process(conn: socket.socket) -> tuple[int, int]:
    """(pid, pidfd) of the process at the other end of ``conn``; pidfd -1 if none can be
    had.  SO_PEERPIDFD names the very process that connected, even if its pid is reused
    since; before Linux 6.5, pidfd_open of the SO_PEERCRED pid (a small window for reuse)."""
    pid = struct.unpack("iII", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("iII")))[0]
    try:
        return pid, conn.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
    except OSError:
        pass
    try:
        return pid, os.pidfd_open(pid)
    except (OSError, AttributeError):
        return pid, -1


def _bad_path(path: object) -> str | None:
    """Why a ring path from a message cannot be used, or None (the runtime directory
    check comes after, in the daemon)."""
    if not isinstance(path, str):
        return f"must be a string, got {type(path).__name__}"
    if not path.startswith("/"):
        return "must be an absolute path"
    if "\0" in path:
        return "contains a NUL byte"
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH:
        return f"longer than {MAX_PATH} bytes"
    return None


def _fd_kind(fd: int) -> str:
    """What a descriptor is, for an error message."""
    st = os.fstat(fd)
    for test, what in ((stat.S_ISFIFO, "a pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(st.st_mode):
            return what
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "unknown"


def _bad_ring_fd(fd: int) -> str | None:
    """A ring passed with SCM_RIGHTS is a memfd or a regular file (its size and contents
    are the ring code's to check)."""
    if stat.S_ISREG(os.fstat(fd).st_mode):
        return None
    return f"the first descriptor must be the ring (a memfd or a regular file), got {_fd_kind(fd)}"


def _bad_eventfd(fd: int) -> str | None:
    """The second descriptor must be an eventfd: a pipe or a socket at EOF would be
    readable for ever and the reader would spin."""
    try:
        if os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventfd]":
            return None
    except OSError:
        pass
    return f"the second descriptor must be an eventfd, got {_fd_kind(fd)}"
