"""The HTTP endpoints: /healthz, /readyz and /metrics on the daemon's event loop.

aiohttp's ``AppRunner``/site split: the runner owns the application, the site owns the
listening socket (TCP ``HOST:PORT`` or a Unix socket path), and both are torn down by the
async context manager.  Handlers only read the daemon's state; none of them can block the
drain, and none takes the reload lock.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from mirrord.config import HttpAddress

if TYPE_CHECKING:
    from mirrord.runtime import Daemon

log = logging.getLogger("mirrord")


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


class HttpServer:
    def __init__(self, daemon: Daemon, address: HttpAddress, registry: CollectorRegistry) -> None:
        self.daemon = daemon
        self.address = address
        self.registry = registry
        self.runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        ok, body = self.daemon.health()
        return web.json_response(body, status=200 if ok else 503)

    async def readyz(self, request: web.Request) -> web.Response:
        ok, body = self.daemon.readiness()
        return web.json_response(body, status=200 if ok else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(self.registry))
        resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        resp.charset = "utf-8"
        return resp

    async def __aenter__(self) -> HttpServer:
        self.runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self.runner.setup()
        a = self.address
        sites: list[web.BaseSite] = []
        try:
            if a.path:
                with contextlib.suppress(FileNotFoundError):
                    if not os.path.isdir(a.path):
                        os.unlink(a.path)  # a stale socket from a killed daemon
                sites.append(web.UnixSite(self.runner, a.path))
            else:
                assert a.host is not None and a.port is not None
                sites.extend(web.SockSite(self.runner, s) for s in listen_tcp(a.host, a.port))
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
