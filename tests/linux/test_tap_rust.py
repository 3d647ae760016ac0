"""The Rust binding end to end: a producer process using only the crate
(native/rust/mirrord-tap/examples/producer.rs) makes a memfd tap, registers it with a real
daemon, takes the rule for eth1 from the daemon's config (rate 7) and offers 1000 distinct
frames.  tcpdump on the session's TAP reads back exactly frames 0, 7, 14, ... 994 (143),
byte for byte, and the daemon's counters agree with the tap's."""
import subprocess
import time

import pytest

from fixtures.cargo import CRATE, run
from fixtures.frames import read_pcap
from fixtures.sessions import sid

pytestmark = pytest.mark.root

SESSION = """
[[session]]
name = "rs"
input = ["eth1"]
rate = 7
output = { type = "tap", name = "mirror0" }
"""


def frame(k: int) -> bytes:
    """The producer's frame k (examples/producer.rs)."""
    head = b"\xff" * 6 + bytes.fromhex("020000000001") + b"\x88\xb5" + k.to_bytes(4, "big")
    return head + bytes((k * 31 + i) & 0xFF for i in range(18, 60 + k % 200))


def test_rust_producer_frames_reach_the_tap_sampled_1_in_7(daemon, netns, capture):
    run("build", "--example", "producer")
    exe = CRATE / "target/debug/examples/producer"
    d = daemon(SESSION)
    cap = capture(netns, "mirror0", extra=("-B", "65536"))
    p = subprocess.Popen([str(exe), str(d.sock), "1000", "eth1"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = {}
        deadline = time.monotonic() + 30
        while "counters" not in lines and time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            lines[line.split()[0]] = dict(f.split("=", 1) for f in line.split()[1:])
        assert "counters" in lines, (lines, p.stderr.read() if p.poll() is not None else "")
        rule, k = lines["rule"], lines["counters"]
        assert rule["session_id"] == str(sid(SESSION, "rs")) and rule["rate"] == "7"
        assert rule["instance"] == d.status()["instance"] and rule["generation"] == "1"
        assert (k["seen"], k["sampled"], k["pushed"], k["dropped_ring_full"], k["returned"]) == \
            ("1000", "143", "143", "0", "143")
        st = d.wait_for(lambda s: s["sessions"][0]["counters"]["mirrored_packets"] >= 143,
                        what="143 copies mirrored")
        cap.stop()
    finally:
        p.stdin.close()
        p.wait(10)
    assert p.returncode == 0, p.stderr.read()

    want = [frame(k) for k in range(0, 1000, 7)]
    assert len(want) == 143
    _, got = read_pcap(cap.path)
    assert [g.hex() for g in got] == [w.hex() for w in want]
    (ring,) = st["rings"]
    assert (ring["name"], ring["via"], ring["eventfd"]) == ("fd:rust-producer", "scm_rights", True)
    assert (ring["offered"], ring["pushed_packets"], ring["dropped_ring_full"], ring["consumed_packets"]) == \
        (143, 143, 0, 143)
    assert ring["pushed_bytes"] == sum(map(len, want))
    c = st["sessions"][0]["counters"]
    assert (c["mirrored_packets"], c["mirrored_bytes"]) == (143, sum(map(len, want)))
    assert c["dropped_no_output"] == c["dropped_sink_busy"] == c["dropped_sink_error"] == 0
