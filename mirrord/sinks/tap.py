"""TAP (whole L2 frame) and TUN (L3 only) outputs through /dev/net/tun.

A device that already exists with that name (a persistent one made by the operator with
``ip tuntap add``) is attached to; otherwise the kernel creates it and it lives as long as
the daemon holds it.  The device is brought up through netlink, and address generation is
turned off on it so the kernel sends nothing of its own to the mirror interface.
"""
from __future__ import annotations

import fcntl
import os
import struct

from pyroute2 import IPRoute

from mirrord import ring
from mirrord.sinks.base import Sink, in_passing_thread, log

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IN6_ADDR_GEN_MODE_NONE = 1

__all__ = ["TapSink", "TunSink", "in_passing_thread"]


def _bring_up(name: str) -> int:
    # pyroute2's sync API (in the passing thread that opens the output): its asyncio API
    # needs AF_NETLINK datagram endpoints, which uvloop does not provide
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            raise OSError(19, f"device {name} vanished")
        try:  # no link-local address: no DAD, no router solicitations on the mirror port
            ipr.link("set", index=idx[0], IFLA_AF_SPEC={
                "attrs": [("AF_INET6", {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", IN6_ADDR_GEN_MODE_NONE)]})]})
        except Exception as e:  # noqa: BLE001 - cosmetic; IPv6 may be off
            log.debug("event=addrgenmode_failed output=%s reason=%r", name, str(e))
        ipr.link("set", index=idx[0], state="up")
        return idx[0]


class _TunTap(Sink):
    flags = 0

    def open_blocking(self) -> int:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            ifr = struct.pack("16sH22x", self.name.encode(), self.flags | IFF_NO_PI)
            fcntl.ioctl(fd, TUNSETIFF, ifr)
            self.ifindex = _bring_up(self.name)
        except Exception as e:  # OSError, or pyroute2's NetlinkError: the fd must not leak
            os.close(fd)
            if isinstance(e, OSError) and e.errno == 22:  # EINVAL: a device of another kind has this name
                raise OSError(22, f"{self.name} exists and is not a {self.kind} device") from None
            raise
        return fd


class TapSink(_TunTap):
    """The default: every copy as the whole original Ethernet frame (VLAN tags intact)."""

    kind = "tap"
    flags = IFF_TAP
    mode = ring.DRAIN_WRITE


class TunSink(_TunTap):
    """L3 only: Ethernet and VLAN headers stripped; non-IP copies dropped (not_ip)."""

    kind = "tun"
    flags = IFF_TUN
    mode = ring.DRAIN_WRITE_L3
