"""Configuration: a TOML file loaded into frozen dataclasses and validated.

Every error a user can make becomes one ``ConfigError`` line naming the session (or the
``[daemon]`` table), the key and the reason; nothing here raises anything else for bad
input.  See docs/configuration.md for every key.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import stat
import tomllib
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# the ring's constants come from its C header through mirrord._ring, built with every install
# (libc only: no libxdp), never copied by hand
from mirrord._ring import lib as _ring

OUTPUT_TYPES = ("tap", "tun", "interface", "vxlan", "geneve", "erspan")
REMOTE_TYPES = ("vxlan", "geneve", "erspan")  # encapsulated by mirrord, sent to remote collectors
MAX_COLLECTORS: int = _ring.MR_ENCAP_MAX_COLLECTORS
MAX_VNI = (1 << 24) - 1
MAX_SOURCE_PORTS: int = _ring.MR_ENCAP_MAX_PORTS  # vxlan, geneve: UDP sockets per collector
MAX_ERSPAN_SESSION = (1 << 10) - 1
DEFAULT_PORTS = {"vxlan": _ring.MR_VXLAN_PORT, "geneve": _ring.MR_GENEVE_PORT}
MAX_PACKET_LENGTH: int = _ring.MR_FRAME_DEFAULT   # the ring's jumbo frame size (9216)
MAX_RATE = 0xFFFF_FFFF
MAX_RUN_LENGTH = 0xFFFF
IFNAMSIZ = 16              # the kernel's buffer for an interface name, NUL included
# bytes the kernel refuses in a name (dev_valid_name: '/', ':' and isspace(), which in the
# kernel's Latin-1 ctype table includes 0xA0), NUL, and '%' (a template: the kernel would
# make "tap%d" into tap0, another name than the one configured)
_IFNAME_BAD = frozenset(b"/:%\0\t\n\v\f\r \xa0")
_SESSION_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_UID = 0xFFFF_FFFE
MAX_CONNECTIONS = 1 << 16
RING_MIN_DATA, RING_MAX_DATA = 1 << 16, 1 << 30  # the ring ABI's bounds on data_size
DEFAULT_MAX_RING_SIZE = 256 << 20
# attached rings per budget (those in runtime_dir; those passed by descriptor alone): two
# budgets of at most 2048 fit the 4096 slots of the SIGBUS guard table (native/src/ring.c)
DEFAULT_MAX_RINGS, MAX_RINGS = 1024, 2048
MAX_FILTER_PROGRAMS = 512 << 10  # bytes of compiled filters in one config (64 Ki instructions)
# wake coalescing ([daemon] max_delay_us): how long a copy may wait for the next poll of its ring
DEFAULT_MAX_DELAY_US, MAX_DELAY_US = 1000, 10000


class ConfigError(ValueError):
    """One line: where (session or daemon), which key, why."""


@dataclasses.dataclass(frozen=True, slots=True)
class Remote:
    """Where and how a remote output (vxlan, geneve, erspan) sends its copies."""

    remote: tuple[str, ...]        # collector addresses, normalised (IPv4 and IPv6 may mix)
    local: str | None = None       # source address (else the route's)
    port: int = 0                  # UDP destination port (vxlan, geneve)
    ttl: int | None = None         # None: the system default
    dscp: int = 0
    vni: int = 0                   # vxlan, geneve
    session_id: int = 0            # erspan
    version: int = 2               # erspan: 2 (Type II) or 3 (Type III)
    spread: str | None = None      # "flow": each flow to one collector (needed for a list)
    source_ports: int = 16         # vxlan, geneve (MR_ENCAP_PORTS_DEFAULT): UDP source ports (sockets) per collector


@dataclasses.dataclass(frozen=True, slots=True)
class Output:
    type: str
    name: str
    remote: Remote | None = None   # the remote types only; ``name`` is then a label made from it


@dataclasses.dataclass(frozen=True, slots=True)
class Input:
    """One ingress of a session: the frames arriving on ``interface``'s bindings, all of
    them (``vlan`` 0) or those whose outer VLAN tag carries ``vlan`` (a sub-interface)."""

    interface: str      # the interface the forwarder binds (a VLAN input's parent)
    vlan: int = 0       # outer VLAN ID 1-4094; 0: the interface's other frames
    name: str = ""      # its label in status and /metrics: "eth1", "eth1.100"
    protocol: str = ""  # a resolved VLAN device's: "802.1Q" or "802.1ad" ("" if not known)

    @property
    def key(self) -> tuple[str, int]:
        return (self.interface, self.vlan)

    def describe(self) -> str:
        """``'eth1.100' (eth1 VLAN 100)`` or ``'eth1'``."""
        return f"{self.name!r} ({self.interface} VLAN {self.vlan})" if self.vlan else repr(self.name)


@dataclasses.dataclass(frozen=True, slots=True)
class Session:
    name: str
    input: tuple[str, ...]       # the inputs' labels, as status shows them
    output: Output
    rate: int = 1
    run_length: int = 0
    max_packet_length: int = 0
    filter: str = ""             # tcpdump's syntax (pcap-filter(7)); "": every frame
    filter_program: bytes = b""  # its classic BPF, compiled by libpcap (mirrord.filter)
    inputs: tuple[Input, ...] = ()  # what input names (VLANs resolved); () : plain interfaces
    when_listened: bool = False  # copy only while something listens to the output (tap, tun)

    @property
    def ingress(self) -> tuple[Input, ...]:
        """Its inputs, resolved: (interface, vlan) pairs with their labels."""
        return self.inputs or tuple(Input(i, 0, i) for i in self.input)

    @property
    def id(self) -> int:
        """Stable session id carried in ring records: CRC-32 of the name, never 0.

        Derived from the name so that producers and a restarted daemon agree on it with no
        coordination, and an unchanged session keeps its id across reloads.
        """
        return zlib.crc32(self.name.encode()) or 1


@dataclasses.dataclass(frozen=True, slots=True)
class HttpAddress:
    host: str | None = "127.0.0.1"
    port: int | None = 9469
    path: str | None = None  # a Unix socket path instead of host:port

    @property
    def enabled(self) -> bool:
        return bool(self.path or self.port)

    def __str__(self) -> str:
        if not self.enabled:
            return "off"
        return self.path if self.path else f"{self.host}:{self.port}"


@dataclasses.dataclass(frozen=True, slots=True)
class DaemonSettings:
    """The [daemon] table (the service itself is mirrord.daemon.Daemon)."""

    runtime_dir: Path = Path("/run/mirrord")
    control_socket: Path = Path("/run/mirrord/control.sock")
    http: HttpAddress = HttpAddress()
    allowed_uids: tuple[int, ...] = ()
    control_mode: int = 0o660
    control_max_connections: int = 64  # concurrent control clients; the excess is closed at once
    http_max_connections: int = 64     # concurrent HTTP clients; the excess is closed at once
    client_timeout: float = 5.0        # seconds: idle client, request head, whole control message
    max_ring_size: int = DEFAULT_MAX_RING_SIZE  # largest data area of a ring the daemon maps
    max_rings: int = DEFAULT_MAX_RINGS  # attached rings in runtime_dir, and again passed by descriptor
    max_delay_us: int = DEFAULT_MAX_DELAY_US  # wake coalescing: longest poll delay (0: off, wake per batch)


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    daemon: DaemonSettings
    sessions: tuple[Session, ...]
    source: str = "<string>"

    def session(self, name: str) -> Session | None:
        return next((s for s in self.sessions if s.name == name), None)


# ------------------------------------------------------------------------------ parsing


def _where(session: str | None) -> str:
    return f'session "{session}"' if session is not None else "[daemon]"


def _fail(session: str | None, key: str, reason: str) -> ConfigError:
    return ConfigError(f'{_where(session)}: key "{key}": {reason}')


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str | None, prefix: str = "") -> None:
    for key in table:
        if key not in allowed:
            raise _fail(where, prefix + key, f"unknown key (expected one of: {', '.join(sorted(allowed))})")


def _int(table: Mapping[str, Any], key: str, default: int, lo: int, hi: int, where: str | None) -> int:
    v = table.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int):
        raise _fail(where, key, f"must be an integer, got {type(v).__name__} {v!r}")
    if not lo <= v <= hi:
        raise _fail(where, key, f"must be between {lo} and {hi}, got {v}")
    return v


def _ifname(v: Any, where: str | None, key: str) -> str:
    """An interface name the kernel takes as it is (net/core/dev.c: dev_valid_name)."""
    if not isinstance(v, str):
        raise _fail(where, key, f"must be an interface name (string), got {type(v).__name__} {v!r}")
    raw = v.encode("utf-8", "surrogatepass")
    bad = next((b for b in raw if b in _IFNAME_BAD), None)
    if not 0 < len(raw) < IFNAMSIZ:
        why = f"is {len(raw)} bytes long"
    elif v in (".", ".."):
        why = "is reserved"
    elif bad is not None:
        why = ("contains a NUL byte" if bad == 0 else f"contains {chr(bad)!r}" if bad < 0x80
               else f"contains byte 0x{bad:02x} in its UTF-8, which the kernel takes for a space")
    else:
        return v
    raise _fail(where, key, f"{v!r} is not a valid interface name (1-15 bytes, none of NUL '/' ':' '%' "
                            f"or whitespace, not '.' or '..'): it {why}")


def _parse_http(v: Any) -> HttpAddress:
    if not isinstance(v, str) or not v:
        raise _fail(None, "http", f'must be "HOST:PORT", a Unix socket path or "off", got {v!r}')
    if v == "off":
        return HttpAddress(host=None, port=None, path=None)
    if v.startswith("/"):
        return HttpAddress(host=None, port=None, path=v)
    host, sep, port = v.rpartition(":")
    host = host.strip("[]")
    if not sep or not re.fullmatch(r"[0-9]{1,5}", port) or not 0 < int(port) < 65536:
        raise _fail(None, "http", f'must be "HOST:PORT" with a port 1-65535, got {v!r}')
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise _fail(None, "http", f"host {host!r} is not an IP address or localhost") from None
    return HttpAddress(host=host, port=int(port))


def _parse_daemon(t: Any) -> DaemonSettings:
    if not isinstance(t, dict):
        raise ConfigError('[daemon]: must be a table')
    _check_keys(t, {"runtime_dir", "control_socket", "http", "allowed_uids", "control_mode",
                    "control_max_connections", "http_max_connections", "client_timeout",
                    "max_ring_size", "max_rings", "max_delay_us"}, None)
    d = DaemonSettings()
    kw: dict[str, Any] = {}
    for key in ("runtime_dir", "control_socket"):
        if key in t:
            v = t[key]
            if not isinstance(v, str) or not v.startswith("/"):
                raise _fail(None, key, f"must be an absolute path, got {v!r}")
            kw[key] = Path(v)
    if "runtime_dir" in kw and "control_socket" not in kw:
        kw["control_socket"] = kw["runtime_dir"] / "control.sock"
    if "http" in t:
        kw["http"] = _parse_http(t["http"])
    if "allowed_uids" in t:
        v = t["allowed_uids"]
        if not isinstance(v, list) or any(isinstance(u, bool) or not isinstance(u, int)
                                          or not 0 <= u <= MAX_UID for u in v):
            raise _fail(None, "allowed_uids", f"must be a list of uids (integers 0..{MAX_UID}), got {v!r}")
        kw["allowed_uids"] = tuple(v)
    if "control_mode" in t:
        kw["control_mode"] = _int(t, "control_mode", 0o660, 0, 0o777, None)
    for key in ("control_max_connections", "http_max_connections"):
        if key in t:
            kw[key] = _int(t, key, 64, 1, MAX_CONNECTIONS, None)
    if "client_timeout" in t:
        v = t["client_timeout"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.1 <= v <= 3600:
            raise _fail(None, "client_timeout", f"must be a number of seconds between 0.1 and 3600, got {v!r}")
        kw["client_timeout"] = float(v)
    if "max_ring_size" in t:
        kw["max_ring_size"] = _int(t, "max_ring_size", DEFAULT_MAX_RING_SIZE, RING_MIN_DATA, RING_MAX_DATA, None)
    if "max_rings" in t:
        kw["max_rings"] = _int(t, "max_rings", DEFAULT_MAX_RINGS, 1, MAX_RINGS, None)
    if "max_delay_us" in t:
        kw["max_delay_us"] = _int(t, "max_delay_us", DEFAULT_MAX_DELAY_US, 0, MAX_DELAY_US, None)
    return dataclasses.replace(d, **kw)


def _parse_session(t: Any, index: int, links: Mapping[str, Any]) -> Session:
    if not isinstance(t, dict):
        raise ConfigError(f"[[session]] #{index + 1}: must be a table")
    name = t.get("name")
    if not isinstance(name, str) or not _SESSION_NAME.fullmatch(name):
        where = f"[[session]] #{index + 1}"
        raise ConfigError(f'{where}: key "name": must be 1-64 characters of A-Z a-z 0-9 _ . -, got {name!r}')
    _check_keys(t, {"name", "input", "rate", "run_length", "max_packet_length", "output", "filter",
                    "when_listened"}, name)
    if "input" not in t:
        raise _fail(name, "input", "missing: the list of ingress interfaces to mirror")
    inp = t["input"]
    if isinstance(inp, (str, dict)):
        inp = [inp]
    if not isinstance(inp, list) or not inp:
        raise _fail(name, "input", f"must be a non-empty list of interface names, got {t['input']!r}")
    inputs = tuple(_input(v, name, links) for v in inp)
    keys: dict[tuple[str, int], Input] = {}
    for i in inputs:
        if i.key in keys:
            first = keys[i.key]
            what = (f"interface {i.name!r} is listed twice" if first.name == i.name and not i.vlan else
                    f"{i.describe()} is listed twice" if first.name == i.name else
                    f"{i.describe()} and {first.describe()} are the same input")
            raise _fail(name, "input", what)
        keys[i.key] = i
    if "output" not in t:
        raise _fail(name, "output", 'missing: e.g. output = { type = "tap", name = "mirror0" }')
    out = t["output"]
    if not isinstance(out, dict):
        raise _fail(name, "output", f'must be a table such as {{ type = "tap", name = "mirror0" }}, got {out!r}')
    otype = out.get("type", "tap")
    if otype not in OUTPUT_TYPES:
        raise _fail(name, "output.type", f"must be one of {', '.join(OUTPUT_TYPES)}, got {otype!r}")
    if otype in REMOTE_TYPES:
        output = _parse_remote(out, otype, name)
    else:
        _check_keys(out, {"type", "name"}, name, "output.")
        output = None
    if output is not None:
        oname = output.name
    elif "name" not in out:
        raise _fail(name, "output.name", "missing: the output interface name")
    else:
        oname = _ifname(out["name"], name, "output.name")
        output = Output(type=otype, name=oname)
    if oname in {i.name for i in inputs} | {i.interface for i in inputs}:  # a VLAN input: its parent is bound
        raise _fail(name, "output.name", f"{oname!r} is also an input of this session (a mirror loop)")
    mpl = _int(t, "max_packet_length", 0, 0, MAX_PACKET_LENGTH, name)
    if 0 < mpl < 14:
        raise _fail(name, "max_packet_length", f"must be 0 (whole frame) or at least 14 (an Ethernet header), got {mpl}")
    expr, program = _filter(t, name)
    wl = t.get("when_listened", False)
    if not isinstance(wl, bool):
        raise _fail(name, "when_listened", f"must be true or false, got {type(wl).__name__} {wl!r}")
    if wl and otype not in ("tap", "tun"):
        raise _fail(name, "when_listened", f"only for tap and tun outputs (an {otype} output is a port: "
                                           "whatever is on its wire listens), got output.type {otype!r}")
    return Session(
        name=name,
        input=tuple(i.name for i in inputs),
        inputs=inputs,
        output=output,
        rate=_int(t, "rate", 1, 0, MAX_RATE, name),
        run_length=_int(t, "run_length", 0, 0, MAX_RUN_LENGTH, name),
        max_packet_length=mpl,
        filter=expr,
        filter_program=program,
        when_listened=wl,
    )


MAX_VLAN_INPUTS: int = _ring.MR_TAP_MAX_VLAN_RULES  # VLAN rules per binding (tap.h)
MAX_TABLE_INSNS: int = _ring.MR_TAP_MAX_TABLE_INSNS  # filter instructions of one binding's table (tap.h)


def _vid(v: Any, name: str) -> int:
    from mirrord.vlan import VID_MAX, VID_MIN
    if isinstance(v, bool) or not isinstance(v, int):
        raise _fail(name, "input.vlan", f"must be a VLAN ID (an integer {VID_MIN}-{VID_MAX}), got {v!r}")
    if not VID_MIN <= v <= VID_MAX:
        raise _fail(name, "input.vlan", f"VLAN ID must be between {VID_MIN} and {VID_MAX}, got {v}")
    return v


def _input(v: Any, name: str, links: Mapping[str, Any]) -> Input:
    """One element of ``input``: ``"eth1"``, ``"eth1.100"`` (a VLAN device, resolved through
    netlink, or read as parent NAME + VID N when no such device exists) or
    ``{ interface = "eth1", vlan = 100 }``."""
    from mirrord.vlan import VlanError, resolve
    if isinstance(v, dict):
        _check_keys(v, {"interface", "vlan"}, name, "input.")
        if "interface" not in v:
            raise _fail(name, "input.interface", 'missing: e.g. { interface = "eth1", vlan = 100 }')
        iface = _ifname(v["interface"], name, "input.interface")
        if "vlan" not in v:
            return Input(iface, 0, iface)
        vid = _vid(v["vlan"], name)
        return Input(iface, vid, f"{iface}.{vid}")
    iface = _ifname(v, name, "input")
    try:
        found = resolve(iface, links.get(iface))
    except VlanError as e:
        raise _fail(name, "input", str(e)) from None
    if found is None:
        return Input(iface, 0, iface)
    parent, vid, proto = found
    return Input(parent, vid, iface, proto)


def _filter(t: Mapping[str, Any], name: str) -> tuple[str, bytes]:
    """The session's capture filter and its program; libpcap's own text when it does not
    compile: ``session "dns": filter "port 5x": unknown port '5x'``."""
    if "filter" not in t:
        return "", b""
    expr = t["filter"]
    if not isinstance(expr, str):
        raise _fail(name, "filter", f"must be a string in tcpdump's syntax, got {expr!r}")
    if not expr.strip():
        return "", b""
    from mirrord.filter import FilterError, compile_filter
    try:
        return expr, compile_filter(expr)
    except FilterError as e:
        shown = expr if len(expr) <= 80 and expr.isprintable() else expr[:77].encode("unicode_escape").decode() + "..."
        raise ConfigError(f'{_where(name)}: filter "{shown}": {e}') from None


def _links(raw: list[Any]) -> Mapping[str, Any]:
    """Every input name of the document looked up through netlink at once (mirrord.vlan):
    which are VLAN devices, of which parent and VID."""
    from mirrord.vlan import lookup_all
    names = []
    for t in raw:
        inp = t.get("input") if isinstance(t, dict) else None
        for v in inp if isinstance(inp, list) else [inp]:
            if isinstance(v, str) and 0 < len(v.encode("utf-8", "surrogatepass")) < IFNAMSIZ and "\0" not in v:
                names.append(v)
    return lookup_all(names)


def _address(v: Any, where: str, key: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if not isinstance(v, str):
        raise _fail(where, key, f"must be an IPv4 or IPv6 address (string), got {type(v).__name__} {v!r}")
    try:
        a = ipaddress.ip_address(v)
    except ValueError:
        raise _fail(where, key, f"{v!r} is not an IPv4 or IPv6 address") from None
    if a.is_unspecified or a.is_multicast or (a.version == 4 and a == ipaddress.IPv4Address("255.255.255.255")):
        kind = "unspecified" if a.is_unspecified else "multicast" if a.is_multicast else "broadcast"
        raise _fail(where, key, f"{v!r} is a {kind} address, not a collector's or this host's")
    if a.version == 6 and (a.is_link_local or a.scope_id):  # the raw socket gets no interface (scope)
        raise _fail(where, key, f"{v!r} is a link-local (scoped) IPv6 address: use a global or ULA address")
    if a.version == 6 and a.ipv4_mapped is not None:
        raise _fail(where, key, f"{v!r} is an IPv4-mapped IPv6 address: write {a.ipv4_mapped} instead")
    return a


def _oint(out: Mapping[str, Any], key: str, default: int, lo: int, hi: int, where: str) -> int:
    """An integer key of the output table, named "output.KEY" in errors."""
    return _int({"output." + key: out.get(key, default)}, "output." + key, default, lo, hi, where)


def _parse_remote(out: Mapping[str, Any], otype: str, where: str) -> Output:
    """vxlan, geneve, erspan: the collectors and the encapsulation's fields, checked."""
    udp = otype != "erspan"
    keys = {"type", "remote", "local", "ttl", "dscp", "spread"} | ({"port", "vni", "source_ports"} if udp else
                                                                   {"session_id", "version"})
    for key in out:
        if key not in keys:
            other = ("only for vxlan and geneve" if key in ("port", "vni", "source_ports") else
                     "only for erspan" if key in ("session_id", "version") else None)
            if other:
                raise _fail(where, "output." + key, f"{other}, not for {otype}")
    _check_keys(out, keys, where, "output.")
    if "remote" not in out:
        raise _fail(where, "output.remote", f'missing: the collector\'s address, e.g. remote = "192.0.2.10" '
                                            f'or a list with spread = "flow"')
    raw = out["remote"]
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise _fail(where, "output.remote", f"must be an address or a non-empty list of addresses, got {out['remote']!r}")
    if len(raw) > MAX_COLLECTORS:
        raise _fail(where, "output.remote", f"at most {MAX_COLLECTORS} collectors, got {len(raw)}")
    addrs = [_address(v, where, "output.remote") for v in raw]
    seen: set[Any] = set()
    for a in addrs:
        if a in seen:
            raise _fail(where, "output.remote", f"{a} is listed twice")
        seen.add(a)
    spread = out.get("spread")
    if spread is not None and spread != "flow":
        raise _fail(where, "output.spread", f'must be "flow" (each flow to one collector), got {spread!r}')
    if len(addrs) > 1 and spread is None:
        raise _fail(where, "output.spread", f'missing: {len(addrs)} collectors need spread = "flow" '
                                            f"(each flow, both directions, to one of them)")
    local = None
    if "local" in out:
        la = _address(out["local"], where, "output.local")
        other = next((a for a in addrs if a.version != la.version), None)
        if other is not None:
            raise _fail(where, "output.local", f"{la} is IPv{la.version} but collector {other} is IPv{other.version}")
        local = str(la)
    ttl = _oint(out, "ttl", 64, 1, 255, where) if "ttl" in out else None
    kw: dict[str, Any] = {"dscp": _oint(out, "dscp", 0, 0, 63, where)}
    if udp:
        kw["port"] = _oint(out, "port", DEFAULT_PORTS[otype], 1, 65535, where)
        kw["vni"] = _oint(out, "vni", 0, 0, MAX_VNI, where)
        kw["source_ports"] = _oint(out, "source_ports", _ring.MR_ENCAP_PORTS_DEFAULT, 1, MAX_SOURCE_PORTS, where)
    else:
        kw["session_id"] = _oint(out, "session_id", 0, 0, MAX_ERSPAN_SESSION, where)
        v = out.get("version", 2)
        if type(v) is not int or v not in (2, 3):
            raise _fail(where, "output.version", f"must be 2 (ERSPAN Type II) or 3 (Type III), got {v!r}")
        kw["version"] = v
    r = Remote(remote=tuple(str(a) for a in addrs), local=local, ttl=ttl, spread=spread, **kw)
    where_to = ",".join(r.remote)
    if udp:
        label = f"{otype}-vni{r.vni}" + (f"-port{r.port}" if r.port != DEFAULT_PORTS[otype] else "")
    else:
        label = f"erspan{r.version}-session{r.session_id}"
    return Output(type=otype, name=f"{label}@{where_to}", remote=r)


def parse(doc: Mapping[str, Any], source: str = "<string>") -> Config:
    for key in doc:
        if key not in ("daemon", "session"):
            raise ConfigError(f'top level: key "{key}": unknown key (expected [daemon] or [[session]])')
    daemon = _parse_daemon(doc.get("daemon", {}))
    raw = doc.get("session", [])
    if not isinstance(raw, list):
        raise ConfigError('"session": must be an array of tables ([[session]])')
    links = _links(raw)
    sessions = tuple(_parse_session(t, i, links) for i, t in enumerate(raw))

    seen_name: dict[str, int] = {}
    seen_input: dict[tuple[str, int], tuple[str, Input]] = {}
    seen_output: dict[str, str] = {}
    seen_remote: dict[tuple[Any, ...], str] = {}  # (type, port or version, vni or session_id, address)
    seen_id: dict[int, str] = {}
    vlans: dict[str, int] = {}
    for s in sessions:
        if s.name in seen_name:
            raise _fail(s.name, "name", "another session has the same name")
        seen_name[s.name] = 1
        for i in s.ingress:
            if i.key in seen_input:
                other, first = seen_input[i.key]
                same = (f"interface {i.name!r}" if not i.vlan else i.describe()) if first.name == i.name else \
                    f"{i.describe()}, the same input as {first.describe()},"
                raise _fail(s.name, "input", f'{same} is already the input of session "{other}"')
            seen_input[i.key] = (s.name, i)
            if i.vlan:
                vlans[i.interface] = vlans.get(i.interface, 0) + 1
                if vlans[i.interface] > MAX_VLAN_INPUTS:
                    raise _fail(s.name, "input", f"{i.describe()}: interface {i.interface!r} has more than "
                                                 f"{MAX_VLAN_INPUTS} VLAN inputs (the fast path's bound per binding)")
        r = s.output.remote
        if r is not None:  # one VNI (ERSPAN session) to one collector, whatever the lists around it
            what = "session_id" if s.output.type == "erspan" else "vni"
            for a in r.remote:
                k = (s.output.type, r.port, r.version, r.session_id if s.output.type == "erspan" else r.vni,
                     ipaddress.ip_address(a))
                if k in seen_remote and seen_remote[k] != s.name:
                    raise _fail(s.name, "output." + what,
                                f'session "{seen_remote[k]}" already sends to {a} with the same {what}: '
                                f"the collector could not tell them apart")
                seen_remote[k] = s.name
        if s.output.name in seen_output:
            if s.output.remote is not None:  # one VNI (ERSPAN session) to one collector: not told apart
                what = "session_id" if s.output.type == "erspan" else "vni"
                raise _fail(s.name, "output." + what,
                            f'session "{seen_output[s.output.name]}" already sends to {", ".join(s.output.remote.remote)} '
                            f"with the same {what}: the collector could not tell them apart")
            raise _fail(s.name, "output.name",
                        f'{s.output.name!r} is already the output of session "{seen_output[s.output.name]}"')
        seen_output[s.output.name] = s.name
        if s.id in seen_id:  # CRC-32 collision: astronomically rare, but never silent
            raise _fail(s.name, "name", f'its session id collides with session "{seen_id[s.id]}"; rename one')
        seen_id[s.id] = s.name
    total = 0
    for s in sessions:  # the programs travel in one `config` reply (at most 1 MiB): bounded
        total += len(s.filter_program)
        if total > MAX_FILTER_PROGRAMS:
            raise _fail(s.name, "filter", f"the sessions' filters compile to {total // 8} BPF instructions "
                                          f"so far, at most {MAX_FILTER_PROGRAMS // 8} in all")
    per_iface: dict[str, int] = {}  # one binding's table: the rules of every input on its interface
    for s in sessions:
        for i in s.ingress:
            per_iface[i.interface] = per_iface.get(i.interface, 0) + len(s.filter_program) // 8
            if per_iface[i.interface] > MAX_TABLE_INSNS:
                raise _fail(s.name, "filter", f"the filters of the inputs on interface {i.interface!r} compile "
                                              f"to {per_iface[i.interface]} BPF instructions so far, at most "
                                              f"{MAX_TABLE_INSNS} per interface (the fast path's table)")
    by_label = {i.name: n for n, i in seen_input.values()}
    by_label.update({k[0]: n for k, (n, i) in seen_input.items() if not k[1]})
    for k, (n, i) in seen_input.items():  # the interface of a VLAN input is bound by the forwarder too
        by_label.setdefault(k[0], n)
    for s in sessions:
        if s.output.name in by_label:
            raise _fail(s.name, "output.name",
                        f'{s.output.name!r} is an input of session "{by_label[s.output.name]}" (a mirror loop)')
    return Config(daemon=daemon, sessions=sessions, source=source)


def loads(text: str, source: str = "<string>") -> Config:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: TOML syntax error: {e}") from None
    return parse(doc, source)


MAX_CONFIG_SIZE = 1 << 20  # bytes: a bigger "config" is a mistake (or /dev/zero)


def _read_config(p: Path) -> bytes:
    """The file's bytes, never blocking and never unbounded: opened O_NONBLOCK (a FIFO
    does not wait for a writer), refused unless a regular file (a symbolic link is fine:
    its target is judged), at most MAX_CONFIG_SIZE bytes."""
    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = next((what for test, what in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"),
                                                 (stat.S_ISCHR, "a character device"),
                                                 (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
                         if test(st.st_mode)), "not a file")
            raise ConfigError(f"{p}: cannot read: not a regular file ({kind})")
        chunks, n = [], 0
        while n <= MAX_CONFIG_SIZE:  # the size may change while we read: count what comes
            b = os.read(fd, MAX_CONFIG_SIZE + 1 - n)
            if not b:
                break
            chunks.append(b)
            n += len(b)
        if n > MAX_CONFIG_SIZE:
            raise ConfigError(f"{p}: cannot read: larger than {MAX_CONFIG_SIZE} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def load(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = _read_config(p).decode("utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text: {e.reason}") from None
    try:
        return loads(text, str(p))
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(str(p)) else f"{p}: {msg}") from None
