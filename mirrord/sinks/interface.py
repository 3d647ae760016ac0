"""An existing interface (analyser port, veth, bridge port): a raw AF_PACKET socket bound
to it sends each copy out as the whole L2 frame, in sendmmsg batches."""
from __future__ import annotations

import socket

from mirrord import ring
from mirrord.sinks.base import Sink


class InterfaceSink(Sink):
    kind = "interface"
    mode = ring.DRAIN_SENDMMSG

    def present(self, links: set[str] | None) -> bool:
        return links is None or self.name in links

    def open_blocking(self) -> int:
        # protocol 0: the socket sends only and never receives a frame
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            s.bind((self.name, 0))
            self.ifindex = socket.if_nametoindex(self.name)  # (a rename in between: link events catch up)
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        except OSError as e:
            s.close()
            if e.errno == 19:
                raise OSError(19, f"no such interface {self.name}") from None
            raise
        return s.detach()
