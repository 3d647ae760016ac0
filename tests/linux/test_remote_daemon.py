"""Remote outputs in the running daemon: status, /metrics and `mirrord status` per
collector, and an unreachable collector that never holds up another session's output."""
import subprocess

import time

import pytest
from fixtures.collector import THEIRS4
from fixtures.frames import eth, ipv4_udp, read_pcap
from fixtures.sessions import sid

from mirrord.ring import Producer

pytestmark = pytest.mark.root

FAR = """
[[session]]
name = "far"
input = ["eth1"]
output = { type = "vxlan", remote = "198.51.100.7", vni = 42 }
"""
NEAR = """
[[session]]
name = "near"
input = ["eth2"]
output = { type = "tap", name = "mirror0" }
"""
GENEVE = f"""
[[session]]
name = "gen"
input = ["eth3"]
output = {{ type = "geneve", remote = "{THEIRS4}", vni = 7 }}
"""


def test_unreachable_collector_counts_drops_while_a_tap_session_keeps_every_frame(daemon, netns, capture):
    d = daemon(FAR + NEAR)
    far, near = sid(FAR, "far"), sid(NEAR, "near")
    frames = [eth(0x0800, ipv4_udp(b"%05d" % i)) for i in range(3000)]
    cap = capture(netns, "mirror0", extra=["-s", "256", "-B", "32768"])  # room for the burst
    with Producer(d.run_dir / "fwd-q0.ring", data_size=1 << 24) as p:
        d.wait_for(lambda st: len(st["rings"]) == 1, what="ring attached")
        for f in frames:  # the two sessions interleaved on one ring
            assert p.push(f, session_id=far)
            assert p.push(f, session_id=near)
        st = d.wait_for(lambda st: sum(s["counters"]["mirrored_packets"] + s["counters"]["dropped_sink_error"]
                                       for s in st["sessions"]) == 2 * len(frames), what="all drained")
    cap.stop(settle=1.0)
    by = {s["name"]: s for s in st["sessions"]}
    assert by["near"]["counters"]["mirrored_packets"] == len(frames)
    _, got = read_pcap(cap.path)
    assert got == frames  # every frame, in order
    c = by["far"]["counters"]
    assert c["mirrored_packets"] == 0 and c["dropped_sink_error"] == len(frames)
    assert by["far"]["output"]["open"] is True
    (col,) = by["far"]["output"]["collectors"]
    assert col["address"] == "198.51.100.7" and col["dropped_unreachable"] == len(frames)
    assert col["mtu"] == 0 and col["last_error"].startswith("ENETUNREACH")
    assert by["far"]["last_sink_error"].startswith("ENETUNREACH")
    m = d.metrics()
    lv = (("collector", "198.51.100.7"), ("session", "far"))
    assert m[("mirrord_collector_dropped_packets_total", tuple(sorted((*lv, ("reason", "unreachable")))))] \
        == len(frames)
    assert m[("mirrord_collector_packets_total", lv)] == 0
    d.wait_log("event=sink_error session=far")
    out = subprocess.run(["python3", "-m", "mirrord", "status", "-c", str(d.cfg)], capture_output=True, text=True,
                         check=True).stdout
    row = next(line for line in out.splitlines() if line.split()[:2] == ["far", "198.51.100.7"])
    assert row.split()[:7] == ["far", "198.51.100.7", "0", "0", "0", str(len(frames)), "0"]


def test_geneve_session_counts_per_collector_in_status_and_metrics(daemon, collector, capture):
    collector.listen(6081)  # else its host answers port unreachable and the collector is held down
    d = daemon(GENEVE)
    gen = sid(GENEVE, "gen")
    frames = [eth(0x0800, ipv4_udp(b"%05d" % i)) for i in range(500)]
    with Producer(d.run_dir / "fwd-q0.ring", data_size=1 << 22) as p:
        d.wait_for(lambda st: len(st["rings"]) == 1, what="ring attached")
        for i, f in enumerate(frames):  # the first 400 stamped as a forwarder does, the rest not
            assert p.push(f, session_id=gen, ts_ns=time.time_ns() if i < 400 else 0)
        st = d.wait_for(lambda st: st["sessions"][0]["counters"]["mirrored_packets"] == len(frames),
                        what="all sent")
    # the delay histogram counts every stamped copy the collector's sockets took, as for a TAP
    lat = st["sessions"][0]["latency"]
    assert lat["samples"] == 400 and lat["p50_us"] is not None and lat["p99_us"] >= lat["p50_us"]
    (col,) = st["sessions"][0]["output"]["collectors"]
    assert col["packets"] == len(frames) and col["bytes"] == sum(16 + len(f) for f in frames)
    assert col["mtu"] == 9100 and col["dropped_unreachable"] == col["dropped_error"] == 0
    assert st["sessions"][0]["output"]["name"] == f"geneve-vni7@{THEIRS4}"
    m = d.metrics()
    lv = (("collector", THEIRS4), ("session", "gen"))
    assert m[("mirrord_collector_packets_total", lv)] == len(frames)
    assert m[("mirrord_collector_bytes_total", lv)] == col["bytes"]
    assert m[("mirrord_collector_mtu_bytes", lv)] == 9100
