"""Who listens to an output: for sessions with ``when_listened = true`` (TAP and TUN outputs).

An output is listened to when, in the daemon's network namespace,

- a running packet socket is bound to its device, or to every device (tcpdump -i mirror0,
  tcpdump -i any, an IDS on AF_PACKET);
- it has a master (a bridge, a bond: the frames go on from there);
- any of the above holds for a device stacked on it (a VLAN sub-interface, a macvlan or
  macvtap whose lower device it is: they receive what it receives);
- an XDP program is attached to it, or an ingress/clsact qdisc (where tc programs and
  filters hang: what the daemon writes into a TAP or TUN arrives on its ingress).

Packet sockets come from netlink sock_diag (NETLINK_SOCK_DIAG, AF_PACKET with
PACKET_SHOW_INFO: the bound ifindex and whether the socket runs), a small request of our
own because pyroute2's diag module knows inet and unix sockets only.  sock_diag rather than
/proc/net/packet: the same facts as binary fields (no text columns to parse), the running
flag (a socket bound with protocol 0 receives nothing and is no listener), and no file in
/proc that ProtectProc= or a mount namespace may hide.  It takes no RTNL lock, so the dump
runs on the event loop every ``PACKET_EVERY`` (50 ms): a tcpdump started is seen within
that, and the ring header tells the producer at once (see ring-abi.md, line 6).

Master, XDP, stacked devices and qdiscs are rtnetlink facts: asked every ``LINK_EVERY``
(0.25 s) with two dumps (links, qdiscs) sent on a non-blocking socket and answered whenever the kernel gets the RTNL lock
(another process may hold it for long), parsed by pyroute2's marshal when they arrive.
"""
from __future__ import annotations

import asyncio
import errno as errnomod
import logging
import socket
import struct
from collections.abc import Callable

from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_GETLINK, RTM_GETQDISC
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.marshal import MarshalRtnl
from pyroute2.netlink.rtnl.tcmsg import tcmsg

log = logging.getLogger("mirrord")

PACKET_EVERY = 0.05  # seconds between two dumps of the packet sockets
LINK_EVERY = 5       # ... and a look at masters, XDP and qdiscs every this many dumps
IDLE_EVERY = 1.0     # no when_listened session with an open output: look again after this

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
PACKET_SHOW_INFO = 0x1
PACKET_DIAG_INFO = 0   # linux/packet_diag.h: the first attribute
PDI_RUNNING = 0x1
NLMSG_ERROR, NLMSG_DONE = 2, 3
_NLMSG = struct.Struct("=IHHII")           # len, type, flags, seq, pid
_REQ = struct.Struct("=BBHIIII")           # struct packet_diag_req
_MSG_LEN = 16                              # struct packet_diag_msg
_INFO = struct.Struct("=IIIIII")           # struct packet_diag_info: pdi_index ... pdi_flags


def packet_listeners(sock: socket.socket, seq: int) -> set[int]:
    """The ifindexes running packet sockets of this namespace are bound to (0: every device),
    from one sock_diag dump on ``sock`` (NETLINK_SOCK_DIAG, blocking with a timeout)."""
    req = _REQ.pack(socket.AF_PACKET, 0, 0, 0, PACKET_SHOW_INFO, 0xFFFFFFFF, 0xFFFFFFFF)
    sock.send(_NLMSG.pack(_NLMSG.size + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + req)
    out: set[int] = set()
    while True:
        data = sock.recv(1 << 16)
        off = 0
        while off + _NLMSG.size <= len(data):
            ln, typ, _, rseq, _ = _NLMSG.unpack_from(data, off)
            if ln < _NLMSG.size or off + ln > len(data):
                raise OSError(errnomod.EPROTO, "sock_diag: a truncated message")
            if rseq != seq:
                off += (ln + 3) & ~3
                continue
            if typ == NLMSG_DONE:
                return out
            if typ == NLMSG_ERROR:
                code = -struct.unpack_from("=i", data, off + _NLMSG.size)[0]
                raise OSError(code, f"sock_diag AF_PACKET: {errnomod.errorcode.get(code, code)}")
            a = off + _NLMSG.size + _MSG_LEN
            while a + 4 <= off + ln:
                alen, atype = struct.unpack_from("=HH", data, a)
                if alen < 4:
                    break
                if atype == PACKET_DIAG_INFO and alen >= 4 + _INFO.size:
                    index, *_, flags = _INFO.unpack_from(data, a + 4)
                    if flags & PDI_RUNNING:
                        out.add(index)
                a += (alen + 3) & ~3
            off += (ln + 3) & ~3


class ListenerWatch:
    """Polls who listens to the devices ``devices()`` names ({ifindex: session id}) and
    calls ``changed(ids)`` with the session ids that are listened to whenever that set
    changes (and once at start)."""

    def __init__(self, devices: Callable[[], dict[int, int]], changed: Callable[[list[int]], None]) -> None:
        self.devices = devices
        self.changed = changed
        self.listened: list[int] | None = None
        self.packet: set[int] = set()
        self.master: set[int] = set()   # ifindexes with a master or XDP
        self.stacked: dict[int, set[int]] = {}  # ifindex: the devices stacked on it, at any depth
        self._links: dict[int, tuple[int, bool]] = {}  # the link dump so far: ifindex: (lower, master or XDP)
        self._dump_seq = self._dump_kind = self._dumping_for = 0
        self._dumping = False  # a link or qdisc dump asked and not yet done
        self._qdisc: set[int] = set()
        self._qdisc_seen: set[int] = set()
        self._seq = 0
        self.errors = 0
        self.last_error = ""

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            diag = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)
        except OSError as e:  # no sock_diag: every output counts as listened (when in doubt, mirror)
            self._error(f"sock_diag: {e.strerror}: every when_listened output counts as listened")
            diag = None
        diag and diag.settimeout(1.0)
        rtnl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        rtnl.setblocking(False)
        marshal = MarshalRtnl()
        loop.add_reader(rtnl.fileno(), self._rtnl_readable, rtnl, marshal)
        tick = 0
        try:
            while True:
                devs = self.devices()
                if devs:
                    try:
                        if diag is None:
                            raise OSError(errnomod.EAFNOSUPPORT, "no sock_diag socket")
                        self._seq += 1
                        self.packet = packet_listeners(diag, self._seq)
                    except OSError as e:
                        self._error(f"packet sockets: {e.strerror or e}")
                        self.packet = {0}  # cannot tell: copy (when in doubt, mirror)
                    if tick % LINK_EVERY == 0:
                        self._ask_links(rtnl, devs)
                    self._update(devs)
                elif self.listened:  # the last listened output closed: nobody listens to it now
                    self._update(devs)
                tick += 1
                await asyncio.sleep(PACKET_EVERY if devs else IDLE_EVERY)
        finally:
            loop.remove_reader(rtnl.fileno())
            rtnl.close()
            if diag is not None:
                diag.close()

    def _error(self, why: str) -> None:
        self.errors += 1
        if why != self.last_error:
            log.warning("event=listener_check_failed reason=%r", why)
        self.last_error = why

    def _ask_links(self, rtnl: socket.socket, devs: dict[int, int]) -> None:
        """A link dump (masters, XDP, stacked devices), then a qdisc dump: one dump at a time
        on a socket (a second one fails with EBUSY), so the qdisc dump is sent when the link
        dump is done, in _rtnl_readable.  Not while the last ones are still coming (after
        ``LINK_EVERY`` * 20 dumps without an answer they count as lost)."""
        if self._dumping and self._dumping_for < 20:
            self._dumping_for += 1
            return
        self._links = {}
        self._dump(rtnl, RTM_GETLINK)

    def _dump(self, rtnl: socket.socket, kind: int) -> None:
        m = ifinfmsg() if kind == RTM_GETLINK else tcmsg()
        self._seq += 1
        m["header"]["type"] = kind
        m["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
        m["header"]["sequence_number"] = self._seq
        m.encode()
        self._dump_seq, self._dump_kind, self._dumping, self._dumping_for = self._seq, kind, True, 0
        try:
            rtnl.send(m.data)
        except OSError as e:
            self._dumping = False
            self._error(f"rtnetlink: {e.strerror or e}")

    def _rtnl_readable(self, rtnl: socket.socket, marshal: MarshalRtnl) -> None:
        try:
            data = rtnl.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError as e:
            self._error(f"rtnetlink: {e.strerror or e}")
            return
        for msg in marshal.parse(data):
            ev = msg.get("event")
            if ev == "RTM_NEWLINK":
                idx = int(msg.get("index", 0) or 0)
                xdp = msg.get_attr("IFLA_XDP")
                attached = bool(xdp and (xdp.get_attr("IFLA_XDP_ATTACHED") or 0))
                # the lower device, when it is in this namespace (a veth's peer elsewhere is not)
                lower = int(msg.get_attr("IFLA_LINK") or 0)
                if msg.get_attr("IFLA_LINK_NETNSID") is not None:
                    lower = 0
                self._links[idx] = (lower if lower != idx else 0, bool(msg.get_attr("IFLA_MASTER") or attached))
            elif ev == "RTM_NEWQDISC":
                idx = int(msg.get("index", 0) or 0)
                if msg.get_attr("TCA_KIND") in ("ingress", "clsact"):
                    self._qdisc_seen.add(idx)
            elif ev in ("NLMSG_DONE", "NLMSG_ERROR") and msg["header"]["sequence_number"] == self._dump_seq:
                if ev == "NLMSG_ERROR":
                    self._dumping = False
                    self._error(f"rtnetlink dump: {msg.get('header', {}).get('error') or 'error'}")
                elif self._dump_kind == RTM_GETLINK:  # the link dump is whole: now the qdiscs
                    self._links_done()
                    self._qdisc_seen = set()
                    self._dump(rtnl, RTM_GETQDISC)
                else:  # the qdisc dump is whole
                    self._qdisc = set(self._qdisc_seen)
                    self._dumping = False

    def _links_done(self) -> None:
        """The link dump is whole: masters and XDP, and which devices are stacked on which."""
        links = self._links
        self.master = {idx for idx, (_, m) in links.items() if m}
        stacked: dict[int, set[int]] = {}
        for idx in links:
            low, depth = links[idx][0], 0
            while low and depth < 8:  # a VLAN on a macvlan on the TAP...; a loop cannot run away
                stacked.setdefault(low, set()).add(idx)
                low, depth = links.get(low, (0, False))[0], depth + 1
        self.stacked = stacked

    def _update(self, devs: dict[int, int]) -> None:
        every = 0 in self.packet
        ids = sorted({sid for idx, sid in devs.items()
                      if every or any(i in self.packet or i in self.master or i in self._qdisc
                                      for i in (idx, *self.stacked.get(idx, ())))})
        if ids != self.listened:
            gone = set(self.listened or ()) - set(ids)
            came = set(ids) - set(self.listened or ())
            self.listened = ids
            if came or gone or ids == []:
                log.info("event=listeners listened=%s", ",".join(map(str, ids)) or "none")
            self.changed(ids)

    def is_listened(self, session_id: int) -> bool:
        return session_id in (self.listened or ())
