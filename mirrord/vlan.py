"""VLAN sub-interface inputs: what ``eth1.100`` names (docs/configuration.md, "VLAN inputs").

A session's input may be a VLAN device's name (``eth1.100``) or a table
``{ interface = "eth1", vlan = 100 }``: the frames that arrive on the parent's bindings
with that outer VLAN ID (tap.h, mr_tap__set_rules).  Every input name is looked up
through netlink (pyroute2): a VLAN device, whatever its name, is its parent (IFLA_LINK)
and its VID and protocol (IFLA_VLAN_ID, IFLA_VLAN_PROTOCOL).  A device that does not exist (yet) is read by its
spelling: ``NAME.N`` is parent NAME, VID N.
"""
from __future__ import annotations

import re
import threading
from typing import Any

VID_MIN, VID_MAX = 1, 4094
_DOTTED = re.compile(r"(.+)\.([0-9]+)")
_PROTO = {0x8100: "802.1Q", 0x88A8: "802.1ad"}


class VlanError(ValueError):
    """Why a name cannot be a VLAN input (one line)."""


def spelled(name: str) -> tuple[str, int] | None:
    """``("eth1", 100)`` for ``eth1.100``, None for a name without a numeric suffix."""
    m = _DOTTED.fullmatch(name)
    return (m.group(1), int(m.group(2))) if m else None


Found = tuple[str, int, str] | None | bool


def lookup_all(names: list[str]) -> dict[str, Found]:
    """Per name: (parent, vid, protocol) of a VLAN device, False for an interface that is no
    VLAN device, None for no such device (or netlink could not tell).  One netlink socket
    for all, in a passing thread: pyroute2's sync API refuses to run on a thread whose
    event loop is running (the daemon reloads its config there)."""
    out: dict[str, Found] = {}
    if not names:
        return out
    t = threading.Thread(target=_lookup_all, args=(list(dict.fromkeys(names)), out), name="mirrord-vlan")
    t.start()
    t.join()
    return out


def _lookup_all(names: list[str], out: dict[str, Found]) -> None:
    try:
        from pyroute2 import IPRoute
        with IPRoute() as ip:
            for name in names:
                out[name] = _lookup(ip, name)
    except Exception as e:  # noqa: BLE001 - OSError, NetlinkError: then the spelling decides
        out["\0error"] = str(e)


def _lookup(ip: Any, name: str) -> Found:
    from pyroute2.netlink.exceptions import NetlinkError
    try:
        idx = ip.link_lookup(ifname=name)
        if not idx:
            return None
        link = ip.get_links(idx[0])[0]
        info = link.get_attr("IFLA_LINKINFO")
        if info is None or info.get_attr("IFLA_INFO_KIND") != "vlan":
            return False
        data = info.get_attr("IFLA_INFO_DATA")
        vid = data.get_attr("IFLA_VLAN_ID") if data is not None else None
        proto = data.get_attr("IFLA_VLAN_PROTOCOL") if data is not None else None
        parent_idx = link.get_attr("IFLA_LINK")
        if vid is None or not parent_idx or link.get_attr("IFLA_LINK_NETNSID") is not None:
            return None  # a parent in another namespace: fall back to the spelling
        parents = ip.get_links(parent_idx)
    except (OSError, NetlinkError):
        return None
    if not parents:
        return None
    parent = parents[0]
    pinfo = parent.get_attr("IFLA_LINKINFO")
    if pinfo is not None and pinfo.get_attr("IFLA_INFO_KIND") == "vlan":
        return ("", -1, str(parent.get_attr("IFLA_IFNAME")))  # a VLAN on a VLAN: refused by resolve
    if isinstance(proto, int) and proto not in _PROTO and proto > 0xFF:
        proto = int.from_bytes(proto.to_bytes(2, "little"), "big")  # pyroute2 may hand it unswapped
    label = _PROTO.get(proto, f"0x{proto:04x}") if isinstance(proto, int) else ""
    return str(parent.get_attr("IFLA_IFNAME")), int(vid), label


def resolve(name: str, found: Found = None) -> tuple[str, int, str] | None:
    """What an input string names, given its lookup_all() result: (parent, vid, protocol)
    for a VLAN device (whatever its name) or a missing ``NAME.N``, None for a plain
    interface.  VlanError: a VLAN device on a VLAN device, or a ``NAME.N`` spelling whose
    N is no VLAN ID (1-4094)."""
    if found is False:
        return None  # an interface of that name that is no VLAN device: a plain input
    if isinstance(found, tuple):
        parent, vid, proto = found
        if vid < 0:
            raise VlanError(f"{name!r} is a VLAN device on VLAN device {proto!r}: only the outer tag is "
                            "matched, give the outer VLAN device instead")
        return found
    sp = spelled(name)
    if sp is None:
        return None
    parent, vid = sp
    if not VID_MIN <= vid <= VID_MAX:
        raise VlanError(f"{name!r} (no such device) would be VLAN {vid} of {parent!r}: a VLAN ID is "
                        f"{VID_MIN}-{VID_MAX}")
    return parent, vid, ""


__all__ = ["VID_MAX", "VID_MIN", "VlanError", "lookup_all", "resolve", "spelled"]
