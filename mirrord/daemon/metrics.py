"""Prometheus metrics: a collector that reads the daemon's own counters at scrape time.

The counters live where the work happens (per route in C, per ring in shared memory), so
nothing here increments anything: each scrape takes one status snapshot (``Health.status``) and
renders it, which makes ``/metrics`` and ``mirrord status`` agree exactly.  The registry is
owned by the daemon and passed in (tests use their own); nothing registers at import time.

Names follow the Prometheus conventions: base units, ``_total`` on counters, and only
bounded labels (session names and ring names come from the operator's config and the
forwarder's bindings, ``reason`` from a fixed list).  See docs/operations.md for the list.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from mirrord.ring import LAT_BOUNDS_NS

# bucket bounds of mirrord_ring_to_output_delay_seconds, as Prometheus writes "le"
LAT_LE = [floatToGoString(b / 1e9) for b in LAT_BOUNDS_NS]

# status counter key -> reason label, for drops counted per session (at the output)
SESSION_DROPS = {
    "dropped_no_output": "no_output",
    "dropped_sink_busy": "sink_busy",
    "dropped_sink_error": "sink_error",
    "dropped_not_ip": "not_ip",
}
# ... and per ring (at the producer, or records no session claims)
RING_DROPS = {
    "dropped_ring_full": "ring_full",
    "dropped_no_session": "no_session",
}
# forwarder binding counters (from its status file) -> metric name and help
FORWARDER_COUNTERS = {
    "rx_packets": ("mirrord_forwarder_rx_packets", "Frames received by the fast path"),
    "rx_bytes": ("mirrord_forwarder_rx_bytes", "Bytes received by the fast path"),
    "tx_packets": ("mirrord_forwarder_tx_packets", "Frames forwarded by the fast path"),
    "tx_bytes": ("mirrord_forwarder_tx_bytes", "Bytes forwarded by the fast path"),
    "mirror_sampled": ("mirrord_forwarder_mirror_sampled_packets",
                       "Frames the fast path selected for mirroring"),
    "mirror_pushed": ("mirrord_forwarder_mirror_pushed_packets",
                      "Copies the fast path put into its ring"),
    "mirror_filtered": ("mirrord_forwarder_mirror_filtered_packets",
                        "Frames the session's capture filter rejected, before sampling"),
    "mirror_skipped_no_listener": ("mirrord_forwarder_mirror_skipped_no_listener_packets",
                                   "Sampled frames not copied: nobody listened to the output of their "
                                   "when_listened session (sampled = pushed + dropped + these)"),
}
FORWARDER_DROPS = {"mirror_dropped_ring_full": "ring_full", "mirror_dropped_no_ring": "no_ring",
                   "mirror_dropped_ring_lost": "ring_lost"}
# per (binding, session): a rule of the binding's table (its own, or a VLAN input's), the
# input's label (eth1, eth1.100) beside the session's name
FORWARDER_SESSION_COUNTERS = {
    "seen": "Frames of the binding dispatched to the session (its VLAN, or the interface's other frames)",
    "filtered": "Of those, frames the session's filter rejected",
    "sampled": "Of those, frames the session's rate selected",
    "pushed": "Of those, copies put into the binding's ring",
}
FORWARDER_SESSION_DROPS = {"dropped_ring_full": "ring_full", "dropped_no_ring": "no_ring",
                           "dropped_ring_lost": "ring_lost"}
# frames the fast path received but could not forward, by reason
FORWARDER_TX_DROPS = {"dropped_tx_full": "tx_full", "dropped_tx_down": "tx_down"}
# the kernel's own counts on the forwarder's AF_XDP sockets (XDP_STATISTICS): the status key
# is the metric's name after mirrord_forwarder_; rx_* of the ingress socket, tx_* of the egress
FORWARDER_XDP = {
    "xdp_rx_dropped": "Frames the kernel dropped at the ingress socket (no fill frame, too long, ...)",
    "xdp_rx_invalid_descs": "Invalid fill descriptors the kernel found at the ingress socket",
    "xdp_rx_ring_full": "Frames the kernel dropped because the ingress socket's RX ring was full",
    "xdp_rx_fill_ring_empty_descs": "Times the kernel found the ingress socket's fill ring empty",
    "xdp_tx_invalid_descs": "Invalid TX descriptors the kernel refused at the egress socket (not sent)",
    "xdp_tx_ring_empty_descs": "TX wake-ups that found the egress socket's TX ring empty (not a loss)",
}


class DaemonCollector:
    """A prometheus-client custom collector over a status snapshot function."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        st = self.snapshot()
        yield from session_metrics(st)
        yield from collector_metrics(st)
        yield from ring_metrics(st)
        yield from daemon_metrics(st)
        yield from forwarder_metrics(st)


def session_metrics(st: dict[str, Any]) -> Iterator[Metric]:
    pk = CounterMetricFamily("mirrord_mirrored_packets", "Copies delivered to the session's output",
                             labels=["session"])
    by = CounterMetricFamily("mirrord_mirrored_bytes", "Bytes of copies delivered to the session's output",
                             labels=["session"])
    tr = CounterMetricFamily("mirrord_truncated_packets",
                             "Delivered copies shorter than the original frame (max_packet_length)",
                             labels=["session"])
    dr = CounterMetricFamily("mirrord_dropped_packets",
                             "Copies dropped, by reason; per session at the output, per ring "
                             "for ring_full and no_session", labels=["session", "ring", "reason"])
    up = GaugeMetricFamily("mirrord_output_up", "1 when the session's output is open",
                           labels=["session", "type", "output"])
    lat = HistogramMetricFamily("mirrord_ring_to_output_delay_seconds",
                                "Delay from the producer's stamp (ts_ns, CLOCK_REALTIME) to the output "
                                "accepting the copy, per session (counted in C per drain)", labels=["session"])
    for s in st["sessions"]:
        counts, cum = s["latency_buckets"], 0
        buckets = []
        for le, c in zip(LAT_LE, counts):
            cum += c
            buckets.append((le, cum))
        lat.add_metric([s["name"]], buckets, s["latency_sum_ns"] / 1e9)
    for s in st["sessions"]:
        c = s["counters"]
        pk.add_metric([s["name"]], c["mirrored_packets"])
        by.add_metric([s["name"]], c["mirrored_bytes"])
        tr.add_metric([s["name"]], c["truncated"])
        for key, reason in SESSION_DROPS.items():
            dr.add_metric([s["name"], "", reason], c[key])
        up.add_metric([s["name"], s["output"]["type"], s["output"]["name"]], int(s["output"]["open"]))
    for r in st["rings"]:
        for key, reason in RING_DROPS.items():
            dr.add_metric(["", r["name"], reason], r[key])
    yield from (pk, by, tr, dr, up, lat)


# remote outputs' per-collector drops: status key -> reason label
COLLECTOR_DROPS = {"dropped_busy": "busy", "dropped_unreachable": "unreachable", "dropped_error": "error"}


def collector_metrics(st: dict[str, Any]) -> Iterator[Metric]:
    """Remote outputs (vxlan, geneve, erspan): one series per session and collector address
    (bounded: at most 16 collectors per session, from the config)."""
    labels = ["session", "collector"]
    pk = CounterMetricFamily("mirrord_collector_packets", "Encapsulated copies sent to the collector",
                             labels=labels)
    by = CounterMetricFamily("mirrord_collector_bytes",
                             "Bytes sent to the collector (encapsulation included, outer IP header not)",
                             labels=labels)
    dr = CounterMetricFamily("mirrord_collector_dropped_packets",
                             "Copies for the collector dropped at the send, by reason (busy: ENOBUFS/EAGAIN; "
                             "unreachable: no route, host or network unreachable; error: any other)",
                             labels=[*labels, "reason"])
    tr = CounterMetricFamily("mirrord_collector_truncated_mtu_packets",
                             "Copies cut to fit the path MTU to the collector (never fragmented)", labels=labels)
    ic = CounterMetricFamily("mirrord_collector_icmp_errors",
                             "Errors the collector's path reported on the socket (ICMP unreachable...)",
                             labels=labels)
    mtu = GaugeMetricFamily("mirrord_collector_mtu_bytes", "The path MTU to the collector (0: no route)",
                            labels=labels)
    hold = GaugeMetricFamily("mirrord_collector_hold_seconds",
                             "How long the collector is held down after an ICMP unreachable (0: up); its "
                             "copies count as dropped, reason unreachable", labels=labels)
    for s in st["sessions"]:
        for c in s["output"].get("collectors", ()):
            lv = [s["name"], c["address"]]
            pk.add_metric(lv, c["packets"])
            by.add_metric(lv, c["bytes"])
            for key, reason in COLLECTOR_DROPS.items():
                dr.add_metric([*lv, reason], c[key])
            tr.add_metric(lv, c["truncated_mtu"])
            ic.add_metric(lv, c["icmp_errors"])
            mtu.add_metric(lv, c["mtu"])
            hold.add_metric(lv, c.get("hold_ms", 0) / 1000)
    yield from (pk, by, dr, tr, ic, mtu, hold)


def ring_metrics(st: dict[str, Any]) -> Iterator[Metric]:
    pushed = CounterMetricFamily("mirrord_ring_pushed_packets", "Copies the producer put into the ring",
                                 labels=["ring"])
    pushed_b = CounterMetricFamily("mirrord_ring_pushed_bytes", "Bytes the producer put into the ring",
                                   labels=["ring"])
    consumed = CounterMetricFamily("mirrord_ring_consumed_packets", "Records the daemon took from the ring",
                                   labels=["ring"])
    corrupt = CounterMetricFamily("mirrord_ring_corrupt_events",
                                  "Times the daemon found an impossible record and reset the ring",
                                  labels=["ring"])
    wakeups = CounterMetricFamily("mirrord_ring_wakeups",
                                  "eventfd writes the producer made to wake the daemon (each a syscall on "
                                  "its packet path; few while wake coalescing polls the ring)", labels=["ring"])
    fill = GaugeMetricFamily("mirrord_ring_fill_bytes", "Bytes waiting in the ring", labels=["ring"])
    size = GaugeMetricFamily("mirrord_ring_size_bytes", "Size of the ring's data area", labels=["ring"])
    for r in st["rings"]:
        n = [r["name"]]
        pushed.add_metric(n, r["pushed_packets"])
        pushed_b.add_metric(n, r["pushed_bytes"])
        consumed.add_metric(n, r["consumed_packets"])
        corrupt.add_metric(n, r["corrupt"])
        wakeups.add_metric(n, r["wakeups"])
        fill.add_metric(n, r["fill_bytes"])
        size.add_metric(n, r["data_size"])
    yield from (pushed, pushed_b, consumed, corrupt, wakeups, fill, size)


def daemon_metrics(st: dict[str, Any]) -> Iterator[Metric]:
    yield GaugeMetricFamily("mirrord_rings_attached", "Rings the daemon is draining",
                            value=len(st["rings"]))
    yield GaugeMetricFamily("mirrord_sessions", "Mirror sessions in the running config",
                            value=len(st["sessions"]))
    yield GaugeMetricFamily("mirrord_config_generation",
                            "Config generation: 1 at start, +1 per applied reload",
                            value=st["generation"])
    yield GaugeMetricFamily("mirrord_last_reload_success",
                            "1 if the last reload was applied (or none was tried), 0 if refused",
                            value=int(st["last_reload_ok"]))
    yield GaugeMetricFamily("mirrord_ready", "1 when /readyz would answer 200", value=int(st["ready"]))


def _count(v: Any) -> bool:
    """A counter's value as a forwarder's status file may hold it: a non-negative number."""
    return type(v) in (int, float) and v >= 0


def forwarder_metrics(st: dict[str, Any]) -> Iterator[Metric]:
    labels = ["interface", "queue"]
    fams = {k: CounterMetricFamily(name, doc, labels=labels) for k, (name, doc) in FORWARDER_COUNTERS.items()}
    fams.update({k: CounterMetricFamily(f"mirrord_forwarder_{k}", doc, labels=labels)
                 for k, doc in FORWARDER_XDP.items()})
    drops = CounterMetricFamily("mirrord_forwarder_mirror_dropped_packets",
                                "Copies the fast path sampled but could not put into a ring, by reason",
                                labels=[*labels, "reason"])
    link = {k: GaugeMetricFamily(name, doc, labels=["pid"]) for k, name, doc in (
        ("generation", "mirrord_forwarder_config_generation",
         "The daemon's config generation whose sampling the forwarder applies (0: its own file's)"),
        ("in_sync", "mirrord_forwarder_config_in_sync",
         "1 when the forwarder applies the daemon's current config (same instance and generation)"),
        ("registered", "mirrord_forwarder_registered",
         "1 when every ring of the forwarder is registered with the daemon (with its eventfd)"))}
    tx_drops = CounterMetricFamily("mirrord_forwarder_tx_dropped_packets",
                                   "Frames the fast path received but could not forward, by reason "
                                   "(tx_full: no TX slot; tx_down: the egress link is gone or down)",
                                   labels=[*labels, "reason"])
    slabels = [*labels, "input", "session"]
    sess = {k: CounterMetricFamily(f"mirrord_forwarder_session_{k}_packets", doc, labels=slabels)
            for k, doc in FORWARDER_SESSION_COUNTERS.items()}
    sdrops = CounterMetricFamily("mirrord_forwarder_session_dropped_packets",
                                 "Copies of the session the binding sampled but could not put into its ring",
                                 labels=[*slabels, "reason"])
    for f in st.get("forwarders", []):
        pid = [str(f.get("pid"))]
        gen = f.get("generation")
        link["generation"].add_metric(pid, gen if isinstance(gen, int) else 0)
        current = (st.get("instance"), st.get("generation"))
        link["in_sync"].add_metric(pid, int((f.get("instance"), gen) == current))
        link["registered"].add_metric(pid, int(bool(f.get("registered"))))
        bindings = f.get("bindings")
        for b in bindings if isinstance(bindings, list) else []:
            # the file is anyone's in the runtime dir, of any forwarder version: a binding
            # without its labels is left out, and so is a value that is no count
            if not isinstance(b, dict) or "ingress" not in b or "queue" not in b:
                continue
            lv = [str(b["ingress"]), str(b["queue"])]
            # a key missing from the file (a forwarder of another version) is left out, not 0
            for k, fam in fams.items():
                if _count(b.get(k)):
                    fam.add_metric(lv, b[k])
            for k, reason in FORWARDER_DROPS.items():
                if _count(b.get(k)):
                    drops.add_metric([*lv, reason], b[k])
            for k, reason in FORWARDER_TX_DROPS.items():
                if _count(b.get(k)):
                    tx_drops.add_metric([*lv, reason], b[k])
            for r in b.get("sessions", []) if isinstance(b.get("sessions"), list) else []:
                if not isinstance(r, dict) or not _count(r.get("seen")):
                    continue  # a rule the packet thread has not taken up yet
                rv = [*lv, str(r.get("input")), str(r.get("session"))]
                for k, fam in sess.items():
                    if _count(r.get(k, 0)):
                        fam.add_metric(rv, r.get(k, 0))
                for k, reason in FORWARDER_SESSION_DROPS.items():
                    if _count(r.get(k, 0)):
                        sdrops.add_metric([*rv, reason], r.get(k, 0))
    yield from fams.values()
    yield drops
    yield from link.values()
    yield tx_drops
    yield from sess.values()
    yield sdrops


def make_registry(snapshot: Callable[[], dict[str, Any]]) -> CollectorRegistry:
    """The daemon's registry: its own counters plus the process's (RSS, fds, CPU)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(DaemonCollector(snapshot))  # type: ignore[arg-type]
    ProcessCollector(registry=reg)
    return reg
