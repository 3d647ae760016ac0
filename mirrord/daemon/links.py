"""The netlink link watcher: RTM_NEWLINK / RTM_DELLINK of any device, handed on in batches.

The daemon cares about the devices its outputs name (a TAP deleted under it, an
``interface`` output that appears).  This module only reads the events and calls back
with them; what they mean is the caller's business.
"""
from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from pyroute2.netlink.rtnl import RTMGRP_LINK
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

log = logging.getLogger("mirrord")

LinkEvent = tuple[str, str, int]  # (RTM_NEWLINK or RTM_DELLINK, ifname, ifindex; 0: unknown)


def input_device(inp: object) -> str:
    """The device a session input needs: the name itself, or the parent of a VLAN input
    given as a table (an object with ``interface``)."""
    return inp if isinstance(inp, str) else str(getattr(inp, "interface", inp))


def missing_inputs(sessions: Iterable[Any]) -> list[tuple[str, str]]:
    """(session, device) for each input whose device does not exist here now.  A name such
    as eth1.100 counts as present when eth1 is (a VLAN input matched on the parent)."""
    present = {name for _, name in socket.if_nameindex()}
    return [(s.name, dev) for s in sessions for dev in map(input_device, s.input)
            if dev not in present and dev.rpartition(".")[0] not in present]


def link_socket() -> socket.socket:
    """The rtnetlink socket of link events, bound before the outputs are first looked at
    so that a device appearing in between is not missed."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, RTMGRP_LINK))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def watch_links(sock: socket.socket, on_batch: Callable[[list[LinkEvent]], Awaitable[None]],
                      resync: Callable[[], Iterable[str]]) -> None:
    """Link events from ``sock`` on the event loop, parsed by pyroute2, handed to
    ``on_batch`` in batches (all that queued while the previous batch was handled).  On
    an overrun (ENOBUFS: events were lost) every name ``resync()`` gives is reported as
    a RTM_NEWLINK, so that each is looked at again.  Closes ``sock`` when it ends.

    (pyroute2's asyncio API needs AF_NETLINK datagram endpoints, which uvloop lacks, so
    the socket is read with add_reader and pyroute2's marshal parses it.)
    """
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[LinkEvent] = asyncio.Queue()
    marshal = MarshalRtnl()

    def readable() -> None:
        try:
            data = sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError as e:  # ENOBUFS: events lost; resync by retrying every output
            log.warning("event=netlink_overrun reason=%r", e.strerror)
            for name in resync():
                events.put_nowait(("RTM_NEWLINK", name, 0))
            return
        for msg in marshal.parse(data):
            # AF_BRIDGE messages speak of a bridge port, not of the device: a port leaving its
            # bridge is an RTM_DELLINK of the port's name and index (br_ifinfo_notify)
            if msg.get("family") == socket.AF_BRIDGE:
                continue
            name = msg.get_attr("IFLA_IFNAME")
            if msg["event"] in ("RTM_NEWLINK", "RTM_DELLINK") and name:
                events.put_nowait((msg["event"], name, int(msg.get("index", 0) or 0)))

    loop.add_reader(sock.fileno(), readable)
    try:
        while True:
            batch = [await events.get()]
            while not events.empty():
                batch.append(events.get_nowait())
            await on_batch(batch)
    finally:
        loop.remove_reader(sock.fileno())
        sock.close()
