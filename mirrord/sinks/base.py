"""What every sink shares: the fd the drain routine writes to, open/close, async context.

Opening and closing an output is blocking kernel work that can take milliseconds each:
closing an AF_PACKET socket waits for an RCU grace period (``synchronize_net()`` in
``packet_release``, ~10 ms), creating a TAP device takes the RTNL lock and netlink round
trips.  None of it runs on the event loop: ``open_sinks`` opens a batch of outputs in one
passing thread and ``close_fds`` closes a batch in a few passing threads (grace periods
overlap: 64 threads close ~40x faster than one).  The daemon keeps one thread at rest
(see ``in_passing_thread``).
"""
from __future__ import annotations

import asyncio
import errno as errnomod
import logging
import os
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

log = logging.getLogger("mirrord.sink")

T = TypeVar("T")
CLOSE_THREADS = 64  # at most this many passing threads close a batch of outputs (grace periods overlap)


async def in_passing_thread(fn: Callable[..., T], *args: object) -> T:
    """Run a blocking call in a thread that ends with the call.

    Not ``asyncio.to_thread``: the default executor keeps its worker alive for good, and
    while a process has a second thread the kernel takes and drops a reference on the
    file at every write(2) of the drain (fdget on a shared file table).  That costs about
    3 % of the 1514-byte TAP rate (bench/sink.py).  The daemon stays single-threaded
    between output (re)opens; tests/linux/test_operations.py checks it."""
    ex = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mirrord-sink")
    try:
        return await asyncio.get_running_loop().run_in_executor(ex, fn, *args)
    finally:
        ex.shutdown(wait=True)  # the call is done (or running to its end): a short join


class SinkError(OSError):
    """The output could not be opened; the message names it and the reason."""


class Sink:
    kind = "?"
    mode = 0  # a mirrord.ring.DRAIN_* constant
    encap: Any = None  # DRAIN_ENCAP (remote outputs): the collectors the route points to

    def __init__(self, name: str) -> None:
        self.name = name
        self.fd = -1
        self.ifindex = 0  # of the device the open fd is bound to (0: unknown or closed)
        self.error: str | None = None  # why the output is not open, for status/readiness
        self.opens = 0  # attempts that reached the kernel (a socket made, a device asked for)

    @property
    def is_open(self) -> bool:
        return self.fd >= 0

    def collectors(self) -> list[dict[str, Any]]:
        """Per-collector counters (remote outputs); none for a local output."""
        return []

    # -- blocking halves: run in a passing thread, touch nothing but the kernel
    def present(self, links: set[str] | None) -> bool:
        """False when trying to open is pointless: the device it needs does not exist."""
        return True

    def open_blocking(self) -> int:
        """Open the output and return its fd; raise OSError with the reason."""
        raise NotImplementedError  # pragma: no cover - abstract

    # -- the event loop's half
    def opened(self, fd: int) -> None:
        self.fd, self.error = fd, None

    def failed(self, e: OSError) -> str:
        self.fd, self.ifindex = -1, 0
        if e.errno in (errnomod.EMFILE, errnomod.ENFILE):
            # the daemon's state, not the output's: the device is not "gone"
            self.error = (f"{self.kind} {self.name}: the daemon is out of file descriptors "
                          f"({errnomod.errorcode[e.errno]})")
        else:
            self.error = f"{self.kind} {self.name}: {e.strerror or e}"
        return self.error

    async def open(self) -> None:
        """Open the output; on failure record why, leave fd at -1 and raise SinkError."""
        (r,) = await open_sinks([self], log_failures=False)
        if isinstance(r, OSError):
            raise SinkError(r.errno or 0, self.error) from None

    async def try_open(self) -> bool:
        (r,) = await open_sinks([self])
        return not isinstance(r, OSError)

    def release(self, reason: str | None = None) -> int:
        """Mark the output closed and hand back its fd for ``close_fds`` (or -1).  The
        caller takes the fd out of every route first: a closed number is reused."""
        fd, self.fd, self.error, self.ifindex = self.fd, -1, reason, 0
        return fd

    def close(self, reason: str | None = None) -> None:
        """Close here and now (blocking): for tests and a sink used on its own."""
        fd = self.release(reason)
        if fd >= 0:
            os.close(fd)

    async def __aenter__(self) -> "Sink":
        await self.try_open()  # a missing output is counted (no_output), not fatal
        return self

    async def __aexit__(self, *exc: object) -> None:
        await close_fds([self.release("closed")])


def _open_all(sinks: Sequence[Sink]) -> list[int | OSError]:
    """Blocking: open each sink in turn.  One dump of the link names first, so that an
    ``interface`` output whose device is missing is not even tried (an AF_PACKET socket
    costs ~10 ms to close)."""
    links = None
    if any(s.kind == "interface" for s in sinks):
        try:
            links = {name for _, name in socket.if_nameindex()}
        except OSError:
            links = None  # cannot tell: try them all
    out: list[int | OSError] = []
    for s in sinks:
        try:
            if not s.present(links):
                raise OSError(errnomod.ENODEV, f"no such interface {s.name}")
            s.opens += 1
            out.append(s.open_blocking())
        except OSError as e:
            out.append(e)
        except Exception as e:  # noqa: BLE001 - e.g. pyroute2's NetlinkError, a ValueError
            out.append(OSError(getattr(e, "code", 0) or errnomod.EINVAL, str(e)))
    return out


async def open_sinks(sinks: Sequence[Sink], *, log_failures: bool = True) -> list[int | OSError]:
    """Open a batch of outputs in one passing thread; each sink records its fd or why not.
    A failure is logged once per distinct reason, not at every retry."""
    if not sinks:
        return []
    before = [s.error for s in sinks]
    results = await in_passing_thread(_open_all, list(sinks))
    for s, r, was in zip(sinks, results, before):
        if isinstance(r, OSError):
            why = s.failed(r)
            if log_failures and why != was:
                log.warning("event=sink_unavailable output=%s reason=%r", s.name, why)
        else:
            s.opened(r)
    return results


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError as e:  # (EIO from a device gone: the fd is closed all the same)
        log.debug("event=sink_close_failed fd=%d reason=%r", fd, e.strerror)


def _close_all(fds: list[int]) -> None:
    """Blocking: close the fds, in parallel threads that end with the batch (each close of
    an AF_PACKET socket or of a TAP waits for an RCU grace period; parallel ones overlap)."""
    if len(fds) == 1:
        _close(fds[0])
        return
    with ThreadPoolExecutor(max_workers=min(CLOSE_THREADS, len(fds)), thread_name_prefix="mirrord-close") as ex:
        list(ex.map(_close, fds))


async def close_fds(fds: Sequence[int]) -> None:
    """Close output fds off the event loop (in passing threads)."""
    fds = [fd for fd in fds if fd >= 0]
    if fds:
        await in_passing_thread(_close_all, fds)
