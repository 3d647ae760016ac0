"""What every sink shares: the fd the drain routine writes to, open/close, async context."""
from __future__ import annotations

import errno
import logging
import os
import time

log = logging.getLogger("mirrord.sink")
BACKOFF_MIN = 0.1  # seconds before the first retry of an open that failed with EMFILE/ENFILE
BACKOFF_MAX = 5.0


class SinkError(OSError):
    """The output could not be opened; the message names it and the reason."""


class Sink:
    kind = "?"
    mode = 0  # a mirrord.ring.DRAIN_* constant

    def __init__(self, name: str) -> None:
        self.name = name
        self.fd = -1
        self.ifindex = 0  # of the device the open fd is bound to (0: unknown or closed)
        self.error: str | None = None  # why the output is not open, for status/readiness
        # out of descriptors (EMFILE, ENFILE) is the daemon's state, not the output's: no
        # retry before retry_at, backing off, whatever asks (a link event, the reopen tick)
        self.retry_at = 0.0
        self.backoff = 0.0

    @property
    def is_open(self) -> bool:
        return self.fd >= 0

    async def open(self) -> None:
        """Open the output; on failure record why, leave fd at -1 and raise SinkError."""
        try:
            self.fd = await self._open()
            self.error = None
            self.backoff = 0.0
        except OSError as e:
            self.fd = -1
            self.ifindex = 0
            if e.errno in (errno.EMFILE, errno.ENFILE):
                self.backoff = min(max(2 * self.backoff, BACKOFF_MIN), BACKOFF_MAX)
                self.retry_at = time.monotonic() + self.backoff
                self.error = (f"{self.kind} {self.name}: the daemon is out of file descriptors "
                              f"({errno.errorcode[e.errno]}), retrying in {self.backoff:g}s")
            else:
                self.error = f"{self.kind} {self.name}: {e.strerror or e}"
            raise SinkError(e.errno or 0, self.error) from None

    async def try_open(self) -> bool:
        if time.monotonic() < self.retry_at:
            return False  # backing off from EMFILE/ENFILE
        before = self.error
        try:
            await self.open()
        except SinkError as e:
            if e.strerror != before:  # once per distinct reason, not at every retry
                log.warning("event=sink_unavailable output=%s reason=%r", self.name, e.strerror)
            return False
        return True

    def close(self, reason: str | None = None) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = -1
        self.ifindex = 0
        self.error = reason

    async def _open(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    async def __aenter__(self) -> "Sink":
        await self.try_open()  # a missing output is counted (no_output), not fatal
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close("closed")
