"""The missing-interface rule when the interface comes and goes: a pair that started late
(in a forwarder of its own) whose interface is deleted and made again (a new ifindex, as a
container restart does) must be forwarded again, and a pair whose interface never appears
costs one log line, not one per tick.

    src:s0 <-> a0:fwd:b0 <-> k0:sink        a0/s0 made, deleted, made again under the forwarder
"""
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fixtures.daemon import DaemonProc
from fixtures.frames import read_pcap
from fixtures.pktio import read_frames, write_frames
from test_forward import PKTIO, Lab, config, numbered
from test_missing_interface import late, wait  # noqa: F401  (the fixture)

pytestmark = pytest.mark.root


def _ifindex(lab, ns, dev):
    import json
    import subprocess

    out = subprocess.run(["ip", "-j", "-n", ns, "link", "show", dev], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)[0]["ifindex"]


def test_a_late_pair_whose_interface_is_made_again_is_forwarded_again(late, tmp_path):
    cfg = config(tmp_path, "")
    fwd = late.start_forwarder_waiting(cfg)
    late.link_a()
    run = tmp_path / "run"
    wait(lambda: not late.fwd_status(run, fwd.pid)["waiting"], "the pair started")
    frames = numbered(20)
    assert late.transfer(frames, late.src, "s0", late.sink, "k0") == frames
    first = _ifindex(late, late.fwd, "a0")

    import subprocess
    subprocess.run(["ip", "-n", late.src, "link", "del", "s0"], check=True)  # a0 goes with it
    time.sleep(1.0)  # a few of the forwarder's ticks without the interface
    late.link_a()
    assert _ifindex(late, late.fwd, "a0") != first
    deadline = time.monotonic() + 15
    got = []
    while time.monotonic() < deadline and got != frames:
        got = late.transfer(frames, late.src, "s0", late.sink, "k0", timeout=2.0)
    assert fwd.poll() is None, (tmp_path / "fwd.log").read_text()
    assert got == frames, f"{len(got)} of {len(frames)} forwarded after a0 came back"
    late.stop_forwarder(fwd)


def test_a_pair_that_never_appears_logs_once(late, tmp_path):
    cfg = config(tmp_path, "")
    fwd = late.start_forwarder_waiting(cfg)
    run = tmp_path / "run"
    for _ in range(3):  # several status ticks
        before = late.fwd_status(run, fwd.pid)
        time.sleep(0.6)
    assert before["waiting"] == [{"pair": "a0:b0", "missing": ["a0"], "error": None}]
    final = late.stop_forwarder(fwd)
    assert final["waiting"] == before["waiting"]
    log = (tmp_path / "fwd.log").read_text()
    assert log.count("event=pair_waiting") == 1, log
    assert "Traceback" not in log


def test_the_late_pair_made_again_logs_once_and_waits_in_between(late, tmp_path):
    """What the operator sees: one pair_lost line naming the reason, the pair back in
    "waiting" (its bindings gone from status, not shown as live), then pair_started."""
    cfg = config(tmp_path, "")
    fwd = late.start_forwarder_waiting(cfg)
    run = tmp_path / "run"
    late.link_a()
    wait(lambda: not late.fwd_status(run, fwd.pid)["waiting"], "the pair started")
    assert late.transfer(numbered(10), late.src, "s0", late.sink, "k0") == numbered(10)
    subprocess.run(["ip", "-n", late.src, "link", "del", "s0"], check=True)
    st = wait(lambda: (s := late.fwd_status(run, fwd.pid))["waiting"] and s, "the pair waits again")
    assert st["waiting"] == [{"pair": "a0:b0", "missing": ["a0"], "error": None}]
    assert st["rings"] == []  # no ring shown for it, none handed over
    assert [(b["ingress"], b["state"], b["rx_packets"], b["tx_packets"]) for b in st["bindings"]] == [
        ("a0", "down", 10, 10), ("b0", "down", 0, 0)]  # not live, the counts kept
    late.link_a()
    st = wait(lambda: (s := late.fwd_status(run, fwd.pid))["bindings"][0]["state"] == "forwarding" and s,
              "the pair started again")
    assert [(b["ingress"], b["queue"], b["state"]) for b in st["bindings"]] == [
        ("a0", 0, "forwarding"), ("b0", 0, "forwarding")]
    frames = numbered(30)
    assert late.transfer(frames, late.src, "s0", late.sink, "k0") == frames
    final = late.stop_forwarder(fwd)
    a, b = final["bindings"]
    assert (a["ingress"], a["rx_packets"], a["tx_packets"]) == ("a0", 40, 40)  # carried across the restart
    assert (b["ingress"], b["rx_packets"]) == ("b0", 0)
    log = (tmp_path / "fwd.log").read_text()
    assert log.count("event=pair_lost pair=a0:b0 reason='a0: no such interface'") == 1, log
    assert log.count("event=pair_started pair=a0:b0") == 2, log
    assert "Traceback" not in log


# -- two pairs present at start: c0:d0 flaps, a0:b0 forwards on

TWO = """
[[session]]
name = "span"
input = ["a0"]
output = { type = "tap", name = "mirror0" }

[[session]]
name = "flap"
input = ["c0"]
output = { type = "tap", name = "mirror1" }
"""


class TwoPairs(Lab):
    """src:s0 <-> a0:fwd:b0 <-> k0:sink  and  src:s1 <-> c0:fwd:d0 <-> k1:sink"""

    def up(self):
        super().up()
        subprocess.run(["ip", "link", "add", "d0", "netns", self.fwd, "type", "veth", "peer", "name", "k1",
                        "netns", self.sink], check=True)
        for ns, dev in ((self.fwd, "d0"), (self.sink, "k1")):
            self._up(ns, dev)
        self.link_c()
        return self

    def _up(self, ns, dev):
        subprocess.run(["ip", "-n", ns, "link", "set", dev, "mtu", "1500", "addrgenmode", "none", "up"], check=True)

    def link_c(self):
        subprocess.run(["ip", "link", "add", "s1", "netns", self.src, "type", "veth", "peer", "name", "c0",
                        "netns", self.fwd], check=True)
        for ns, dev in ((self.src, "s1"), (self.fwd, "c0")):
            self._up(ns, dev)

    def unlink_c(self):
        subprocess.run(["ip", "-n", self.src, "link", "del", "s1"], check=True)  # c0 goes with it

    def start_two(self, cfg: Path) -> subprocess.Popen:
        p = subprocess.Popen(["ip", "netns", "exec", self.fwd, sys.executable, "-m", "mirrord", "forward",
                              "-c", str(cfg), "--pair", "a0:b0", "--pair", "c0:d0"], stdout=subprocess.PIPE,
                             stderr=open(self.tmp / "fwd.log", "ab"), text=True)
        self.procs.append(p)
        assert p.stdout.readline().strip() == "forwarding", (self.tmp / "fwd.log").read_text()
        return p

    def status(self, run_dir: Path, pid: int) -> dict:
        return json.loads((run_dir / f"forwarder-{pid}.json").read_text())


@pytest.fixture
def two(tmp_path):
    lab = TwoPairs(tmp_path).up()
    yield lab
    lab.down()


class Stream:
    """Frames sent through a0:b0 in chunks by a thread, received by one pktio in k0: the
    other pair's traffic while c0 flaps, every frame counted."""

    def __init__(self, lab, n, chunk=50):
        self.lab, self.frames, self.chunk = lab, numbered(n, size=128), chunk
        self.out = lab.tmp / "stream.out"
        self.recv = subprocess.Popen(["ip", "netns", "exec", lab.sink, sys.executable, PKTIO, "recv", "k0",
                                      str(n), "120", str(self.out)], stdout=subprocess.PIPE, text=True)
        lab.procs.append(self.recv)
        assert self.recv.stdout.readline().strip() == "ready"
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        k = 0
        while self.sent < len(self.frames) and not self.stop.is_set():
            part = self.frames[self.sent:self.sent + self.chunk]
            fin = self.lab.tmp / f"stream{k % 2}.in"
            write_frames(fin, part)
            subprocess.run(["ip", "netns", "exec", self.lab.src, sys.executable, PKTIO, "send", "s0", str(fin)],
                           check=True, timeout=60)
            self.sent += len(part)
            k += 1
            time.sleep(0.05)

    def finish(self):
        self.thread.join(120)
        self.recv.wait(130)
        return read_frames(self.out)


def _fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _flap(two, run, pid):
    two.unlink_c()
    wait(lambda: two.status(run, pid)["waiting"], "c0:d0 waits")
    two.link_c()
    wait(lambda: not two.status(run, pid)["waiting"] and two.status(run, pid)["registered"],
         "c0:d0 forwarded again, its rings registered")


def test_a_pair_present_at_start_made_again_is_forwarded_and_mirrored_again(two, tmp_path, capture):
    d = DaemonProc(tmp_path, TWO, netns=two.fwd).start()
    two.procs.append(d.proc)
    try:
        fwd = two.start_two(d.cfg)
        run = d.run_dir
        wait(lambda: two.status(run, fwd.pid)["registered"], "rings registered")
        first = numbered(20)
        assert two.transfer(first, two.src, "s1", two.sink, "k1") == first
        stream = Stream(two, 400)
        _flap(two, run, fwd.pid)
        got = stream.finish()
        cap = capture(two.fwd, "mirror1", "m1.pcap", extra=("-B", "65536"))
        again = numbered(30, size=200)
        assert two.transfer(again, two.src, "s1", two.sink, "k1") == again
        d.wait_for(lambda s: d.session("flap")["counters"]["mirrored_packets"] == 50, what="c0's copies")
        d.wait_for(lambda s: sorted(r["name"] for r in s["rings"]) == [
            "a0-q0.ring", "b0-q0.ring", "c0-q0.ring", "d0-q0.ring"], what="the old rings let go")
        cap.stop()
        final = two.stop_forwarder(fwd)
    finally:
        d.stop()
    assert got == stream.frames  # the other pair: every frame, in order, while c0 flapped
    _, on_tap = read_pcap(cap.path)
    assert on_tap == again  # the new part mirrors too, byte for byte
    rows = {b["ingress"]: b for b in final["bindings"]}
    assert [b["ingress"] for b in final["bindings"]] == ["a0", "b0", "c0", "d0"]  # same numbering
    assert (rows["a0"]["rx_packets"], rows["a0"]["tx_packets"], rows["a0"]["mirror_pushed"]) == (400, 400, 400)
    c = rows["c0"]
    assert (c["rx_packets"], c["tx_packets"], c["mirror_sampled"], c["mirror_pushed"]) == (50, 50, 50, 50)
    log = (tmp_path / "fwd.log").read_text()
    assert log.count("event=pair_lost pair=c0:d0 reason='c0: no such interface'") == 1, log
    assert "pair=a0:b0" not in log.split("event=forwarding")[1], log
    dlog = d.log.read_text()
    assert dlog.count("event=ring_detached ring=c0-q0.ring reason=ring file removed") == 1, dlog


def test_twenty_flaps_keep_fds_and_memory_bounded_and_lose_nothing_elsewhere(two, tmp_path):
    d = DaemonProc(tmp_path, TWO, netns=two.fwd).start()
    two.procs.append(d.proc)
    try:
        fwd = two.start_two(d.cfg)
        run = d.run_dir
        wait(lambda: two.status(run, fwd.pid)["registered"], "rings registered")
        _flap(two, run, fwd.pid)  # the first flap warms up what stays (imports, caches)
        d.wait_for(lambda s: len(s["rings"]) == 4, what="4 rings")
        fds, rss = _fds(fwd.pid), _rss_kib(fwd.pid)
        dfds = _fds(d.proc.pid)
        stream = Stream(two, 2000)
        for _ in range(20):
            _flap(two, run, fwd.pid)
        got = stream.finish()
        st = d.wait_for(lambda s: len(s["rings"]) == 4, what="the daemon holds 4 rings again")
        after, rss_after, dfds_after = _fds(fwd.pid), _rss_kib(fwd.pid), _fds(d.proc.pid)
        frames = numbered(40)
        assert two.transfer(frames, two.src, "s1", two.sink, "k1") == frames
        d.wait_for(lambda s: d.session("flap")["counters"]["mirrored_packets"] == 40, what="c0's copies")
        # the status file is rewritten each tick, the rings taken in by the follow thread:
        # wait (bounded) until it shows c0's frames and its rings
        fst = wait(lambda: (x := two.status(run, fwd.pid))["bindings"][2]["rx_packets"] == 40
                   and len(x["rings"]) == 4 and x["registered"] and x, "the status caught up")
        final = two.stop_forwarder(fwd)
    finally:
        d.stop()
    assert got == stream.frames, f"{len(got)} of {len(stream.frames)} through a0:b0 during the flaps"
    # a part kept per flap would cost the forwarder >= 8 fds (2 AF_XDP sockets, 2 XSKMAPs, 2
    # programs, 2 links, 2 rings, 2 eventfds) and the daemon 4 (2 rings, 2 eventfds): 80 and
    # 40 over 20 flaps.  Slack of 2 for a control connection open at the time of counting.
    assert after - fds <= 2, f"forwarder fds {fds} -> {after} over 20 flaps"
    assert dfds_after - dfds <= 2, f"daemon fds {dfds} -> {dfds_after} over 20 flaps"
    assert rss_after - rss < 8 * 1024, f"forwarder RSS {rss} -> {rss_after} KiB over 20 flaps"
    assert sorted(r["name"] for r in st["rings"]) == ["a0-q0.ring", "b0-q0.ring", "c0-q0.ring", "d0-q0.ring"]
    assert len(fst["bindings"]) == 4 and len(fst["rings"]) == 4  # the lists do not grow with the flaps
    rows = {b["ingress"]: b for b in final["bindings"]}
    assert (rows["a0"]["rx_packets"], rows["a0"]["tx_packets"], rows["a0"]["mirror_pushed"]) == (2000, 2000, 2000)
    for b in final["bindings"]:  # every copy accounted for, across the parts of each slot
        assert b["mirror_sampled"] == (b["mirror_pushed"] + b["mirror_dropped_ring_full"] + b["mirror_dropped_no_ring"]
                                       + b["mirror_dropped_ring_lost"] + b["mirror_skipped_no_listener"]), b
    assert rows["c0"]["rx_packets"] == rows["c0"]["mirror_pushed"] == 40
    log = (tmp_path / "fwd.log").read_text()
    assert log.count("event=pair_lost pair=c0:d0") == 21 and log.count("event=pair_started pair=c0:d0") == 21
    assert "Traceback" not in log
