"""What every sink shares: the fd the drain routine writes to, open/close, async context."""
from __future__ import annotations

import logging
import os

log = logging.getLogger("mirrord.sink")


class SinkError(OSError):
    """The output could not be opened; the message names it and the reason."""


class Sink:
    kind = "?"
    mode = 0  # a mirrord.ring.DRAIN_* constant

    def __init__(self, name: str) -> None:
        self.name = name
        self.fd = -1
        self.error: str | None = None  # why the output is not open, for status/readiness

    @property
    def is_open(self) -> bool:
        return self.fd >= 0

    async def open(self) -> None:
        """Open the output; on failure record why, leave fd at -1 and raise SinkError."""
        try:
            self.fd = await self._open()
            self.error = None
        except OSError as e:
            self.fd = -1
            self.error = f"{self.kind} {self.name}: {e.strerror or e}"
            raise SinkError(e.errno or 0, self.error) from None

    async def try_open(self) -> bool:
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
        self.error = reason

    async def _open(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    async def __aenter__(self) -> "Sink":
        await self.try_open()  # a missing output is counted (no_output), not fatal
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close("closed")
