"""The HTTP endpoints: /healthz, /readyz and /metrics on the daemon's event loop.

aiohttp's ``AppRunner``/site split: the runner owns the application, the site owns the
listening socket (TCP ``HOST:PORT`` or a Unix socket path), and both are torn down by the
async context manager.  Handlers only read the daemon's state (through ``Probes``); none of them can block the
drain, and none takes the reload lock.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from mirrord.config import HttpAddress

log = logging.getLogger("mirrord")
BUSY_LOG_EVERY = 10.0  # seconds between two http_busy lines


def listen_tcp(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for HOST:PORT, bound here rather than by the event loop.

    uvloop resolves a host given to create_server() in libuv's thread pool, whose four
    threads then live for good; a process with more than one thread pays a file reference
    at every write(2) of the drain (see sinks.tap.in_passing_thread).  The host is an IP
    address or localhost (config.py), so this lookup reads no network."""
    socks: list[socket.socket] = []
    try:
        seen = set()
        for fam, typ, proto, _, addr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                            flags=socket.AI_PASSIVE):
            if (fam, addr) in seen:
                continue
            seen.add((fam, addr))
            s = socket.socket(fam, typ, proto)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind(addr)
            s.listen(128)
            s.setblocking(False)
    except OSError:
        for s in socks:
            s.close()
        raise
    return socks


def listen_unix(path: str) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        if not os.path.isdir(path):
            os.unlink(path)  # a stale socket from a killed daemon
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(path)
        s.listen(128)
        s.setblocking(False)
    except OSError:
        s.close()
        raise
    return s


class Gate:
    """At most ``limit`` HTTP connections at once, the excess closed as it arrives; and a
    connection that is not in a request is closed after ``timeout`` seconds: one that sends
    nothing, or not a whole request head (slowloris), or idles after a reply.

    (aiohttp has no connection limit, and only its newest releases time out a connection
    that never sends a request.)
    """

    def __init__(self, limit: int, timeout: float) -> None:
        self.limit = limit
        self.timeout = timeout
        self.active = 0
        self.refused = 0
        self.timed_out = 0
        self.conns: dict[asyncio.BaseTransport, _Gated] = {}
        self._logged = (0, -BUSY_LOG_EVERY)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        g = self.conns.get(request.transport) if request.transport is not None else None
        if g is not None:
            g.disarm()
        try:
            return await handler(request)
        finally:
            if g is not None:
                g.arm()  # the reply is on its way; the next request head has `timeout` s

    def admit(self, loop: asyncio.AbstractEventLoop) -> bool:
        if self.active < self.limit:
            self.active += 1
            return True
        self.refused += 1
        now = loop.time()
        seen, at = self._logged
        if now - at >= BUSY_LOG_EVERY:
            log.warning("event=http_busy refused=%d max_connections=%d", self.refused - seen, self.limit)
            self._logged = (self.refused, now)
        return False


class _Gated(asyncio.Protocol):
    """Stands in front of aiohttp's request handler for one connection."""

    def __init__(self, gate: Gate, inner: asyncio.Protocol) -> None:
        self.gate = gate
        self.inner: asyncio.Protocol | None = inner
        self.transport: asyncio.BaseTransport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.gate.admit(asyncio.get_running_loop()):
            self.inner = None
            transport.abort()  # over the cap: closed at once, before it costs anything
            return
        assert self.inner is not None
        self.transport = transport
        self.gate.conns[transport] = self
        self.arm()
        self.inner.connection_made(transport)

    def arm(self) -> None:
        self.disarm()
        if self.transport is not None:
            self.timer = asyncio.get_running_loop().call_later(self.gate.timeout, self._expire)

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expire(self) -> None:
        self.timer = None
        if self.transport is not None:
            self.gate.timed_out += 1
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inner is not None:
            self.disarm()
            self.gate.active -= 1
            self.gate.conns.pop(self.transport, None)  # type: ignore[arg-type]
            self.transport = None
            self.inner.connection_lost(exc)
            self.inner = None

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


class _GatedSite(web.BaseSite):
    """A site on a socket bound here, whose connections pass the gate."""

    def __init__(self, runner: web.AppRunner, sock: socket.socket, gate: Gate) -> None:
        super().__init__(runner)
        self._sock = sock
        self._gate = gate

    @property
    def name(self) -> str:
        return str(self._sock.getsockname())

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Gated(self._gate, server()), sock=self._sock)


class Probes(Protocol):
    """What the endpoints ask of the daemon: (ok, JSON body) of liveness and readiness."""

    def health(self) -> tuple[bool, dict[str, Any]]: ...
    def readiness(self) -> tuple[bool, dict[str, Any]]: ...


class HttpServer:
    def __init__(self, probes: Probes, address: HttpAddress, registry: CollectorRegistry, *,
                 max_connections: int = 64, timeout: float = 5.0) -> None:
        self.probes = probes
        self.address = address
        self.registry = registry
        self.runner: web.AppRunner | None = None
        self.gate = Gate(max_connections, timeout)
        self.timeout = timeout

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.gate.middleware])
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        ok, body = self.probes.health()
        return web.json_response(body, status=200 if ok else 503)

    async def readyz(self, request: web.Request) -> web.Response:
        ok, body = self.probes.readiness()
        return web.json_response(body, status=200 if ok else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(self.registry))
        resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        resp.charset = "utf-8"
        return resp

    async def __aenter__(self) -> HttpServer:
        # keepalive_timeout runs from the connection's start (aiohttp >= 3.10): the idle and
        # request-head timeout; shutdown_timeout: a stop does not wait on slow clients
        self.runner = web.AppRunner(self.app(), access_log=None, handle_signals=False,
                                    keepalive_timeout=self.timeout, shutdown_timeout=self.timeout)
        await self.runner.setup()
        a = self.address
        sites: list[web.BaseSite] = []
        try:
            socks = [listen_unix(a.path)] if a.path else listen_tcp(a.host or "", a.port or 0)
            sites.extend(_GatedSite(self.runner, s, self.gate) for s in socks)
            for site in sites:
                await site.start()
        except OSError as e:
            await self.runner.cleanup()
            why = os.strerror(e.errno) if e.errno else str(e)
            raise OSError(e.errno, f'[daemon] http "{a}": {why}') from None
        log.info("event=http_listening address=%s", a)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.address.path:
            with contextlib.suppress(OSError):
                os.unlink(self.address.path)
