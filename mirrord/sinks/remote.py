"""Remote outputs: VXLAN, GENEVE and ERSPAN II/III to one collector or spread over several.

mirrord encapsulates every copy itself, in the C drain (native/src/encap.c, drain mode
``DRAIN_ENCAP``): no kernel tunnel device is needed on this host (this one has no GRE,
ERSPAN or GENEVE modules), and the UDP source port can follow the inner flow.  This file is
the thin binding over ``struct mr_encap`` (validate, call, check, convert) and the sink.

The sink's ``fd`` is its first collector's socket, only so that routes see it open (>= 0)
or missing (-1); the encap owns every socket and closes them all on ``release``.  Raw
sockets close without an RCU grace period, so that is done at once on the event loop.
"""
from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any

from mirrord import ring
from mirrord._ring import ffi, lib
from mirrord.config import Output
from mirrord.sinks.base import Sink

_ERRLEN = 256
_KINDS = {"vxlan": lib.MR_ENCAP_VXLAN, "geneve": lib.MR_ENCAP_GENEVE}
_ERSPAN = {2: lib.MR_ENCAP_ERSPAN2, 3: lib.MR_ENCAP_ERSPAN3}
# per-collector counters, in status and /metrics, named as in struct mr_collector_stats
COLLECTOR_COUNTERS = ("packets", "bytes", "dropped_busy", "dropped_unreachable", "dropped_error",
                      "truncated_mtu", "icmp_errors")


class Encap:
    """One ``struct mr_encap``: the collectors of one output, their sockets and counters."""

    def __init__(self, output: Output) -> None:
        r = output.remote
        if r is None:
            raise ValueError(f"output {output.name}: not a remote output")
        cfg = ffi.new("struct mr_encap_config *")
        cfg.kind = _ERSPAN[r.version] if output.type == "erspan" else _KINDS[output.type]
        cfg.vni = r.vni
        cfg.port = r.port
        cfg.session_id = r.session_id
        cfg.ttl = -1 if r.ttl is None else r.ttl
        cfg.dscp = r.dscp
        cfg.spread = int(r.spread == "flow")
        cfg.source_ports = r.source_ports
        ptr = lib.mr_encap__new(cfg)
        if ptr == ffi.NULL:
            e = ffi.errno
            raise OSError(e, f"output {output.name}: {os.strerror(e)}")
        self.ptr = ffi.gc(ptr, lib.mr_encap__free)
        self.addresses = r.remote
        for a in r.remote:
            ip = ipaddress.ip_address(a)
            rc = lib.mr_encap__add(self.ptr, socket.AF_INET if ip.version == 4 else socket.AF_INET6, ip.packed)
            if rc < 0:
                raise OSError(-rc, f"collector {a}: {os.strerror(-rc)}")
        self.local = ipaddress.ip_address(r.local).packed if r.local else b""

    def open(self) -> int:
        """Blocking (a thread's work): make every collector's socket; their first fd."""
        err = ffi.new("char[]", _ERRLEN)
        rc = lib.mr_encap__open(self.ptr, self.local or ffi.NULL, len(self.local), err, _ERRLEN)
        if rc:
            raise OSError(-rc, ffi.string(err).decode(errors="replace") or os.strerror(-rc))
        return int(lib.mr_encap__fd(self.ptr, 0))

    def close(self) -> None:
        lib.mr_encap__close(self.ptr)

    def refresh(self) -> None:
        """Re-read routes, MTUs and socket errors now (the drain does it once a second)."""
        lib.mr_encap__refresh(self.ptr)

    def collectors(self) -> list[dict[str, Any]]:
        out = []
        st = ffi.new("struct mr_collector_stats *")
        for i, a in enumerate(self.addresses):
            lib.mr_encap__stats(self.ptr, i, st)
            e = st.last_errno
            out.append({"address": a, "packets": st.pkts, "bytes": st.bytes, "dropped_busy": st.drop_busy,
                        "dropped_unreachable": st.drop_unreachable, "dropped_error": st.drop_error,
                        "truncated_mtu": st.truncated_mtu, "icmp_errors": st.icmp_errors, "mtu": st.mtu,
                        "hold_ms": st.hold_ms,
                        "last_error": f"{errno_name(e)}: {os.strerror(e)}" if e else None})
        return out


def errno_name(e: int) -> str:
    import errno as errnomod

    return errnomod.errorcode.get(e, str(e))


class RemoteSink(Sink):
    """vxlan / geneve / erspan: copies encapsulated and sent to the collectors."""

    mode = ring.DRAIN_ENCAP

    def __init__(self, output: Output) -> None:
        super().__init__(output.name)
        self.kind = output.type
        self.encap: Encap | None = Encap(output)

    def open_blocking(self) -> int:
        assert self.encap is not None
        return self.encap.open()

    def release(self, reason: str | None = None) -> int:
        super().release(reason)
        if self.encap is not None:
            self.encap.close()  # every collector's socket (no route holds the fd any more)
        return -1

    def collectors(self) -> list[dict[str, Any]]:
        return self.encap.collectors() if self.encap is not None else []
