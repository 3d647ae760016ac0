"""A missing interface is not fatal (issue 17): a session whose input or output interface does
not exist yet runs as soon as it appears.  The forwarder logs the pair it waits for and
forwards and mirrors it once its interfaces exist; the daemon opens the `interface` output
once it appears.  And the round trip of `mirrord import junos`: its file, checked by
`mirrord check-config`, run by the daemon and the forwarder with frames on the TAP.

    src:s0 <-> a0:fwd:b0 <-> k0:sink        a0/s0 and ana0/acap0 made after the start
"""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures.daemon import DaemonProc
from fixtures.frames import read_pcap
from test_forward import Lab, numbered

pytestmark = pytest.mark.root
BIG = ("-B", "65536")  # tcpdump's buffer (KiB): room for a burst of 200 (-s 0 slots are large)


class LateLab(Lab):
    """The lab without the src <-> fwd link: ``link_a()`` makes it, under a running forwarder."""

    def up(self):
        for ns in (self.src, self.fwd, self.sink):
            subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "link", "add", "b0", "netns", self.fwd, "type", "veth", "peer", "name", "k0",
                        "netns", self.sink], check=True)
        for ns, dev in ((self.fwd, "b0"), (self.sink, "k0")):
            self._up(ns, dev)
        return self

    def _up(self, ns, dev):
        subprocess.run(["ip", "-n", ns, "link", "set", dev, "mtu", "1500", "addrgenmode", "none", "up"], check=True)

    def link_a(self):
        subprocess.run(["ip", "link", "add", "s0", "netns", self.src, "type", "veth", "peer", "name", "a0",
                        "netns", self.fwd], check=True)
        for ns, dev in ((self.src, "s0"), (self.fwd, "a0")):
            self._up(ns, dev)

    def start_forwarder_waiting(self, cfg: Path) -> subprocess.Popen:
        p = subprocess.Popen(["ip", "netns", "exec", self.fwd, sys.executable, "-m", "mirrord", "forward",
                              "-c", str(cfg), "--pair", "a0:b0"], stdout=subprocess.PIPE,
                             stderr=open(self.tmp / "fwd.log", "ab"), text=True)
        self.procs.append(p)
        assert p.stdout.readline().strip() == "forwarding", (self.tmp / "fwd.log").read_text()
        return p

    def fwd_status(self, run_dir: Path, pid: int) -> dict:
        return json.loads((run_dir / f"forwarder-{pid}.json").read_text())


@pytest.fixture
def late(tmp_path):
    lab = LateLab(tmp_path).up()
    yield lab
    lab.down()


def wait(pred, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if v := pred():
            return v
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout}s")


SESSIONS = """
[[session]]
name = "span"
input = ["a0"]
output = { type = "tap", name = "mirror0" }

[[session]]
name = "back"
input = ["b0"]
rate = 4
output = { type = "interface", name = "ana0" }
"""


def test_input_and_output_that_appear_after_the_start_are_mirrored(late, tmp_path, capture):
    d = DaemonProc(tmp_path, SESSIONS, netns=late.fwd).start()
    late.procs.append(d.proc)
    try:
        assert d.session("back")["output"]["open"] is False  # ana0 does not exist: waits for it
        d.wait_log("event=input_missing session=span input=a0")  # one line, the daemon goes on
        fwd = late.start_forwarder_waiting(d.cfg)
        st = late.fwd_status(d.run_dir, fwd.pid)
        assert st["waiting"] == [{"pair": "a0:b0", "missing": ["a0"], "error": None}]
        assert st["bindings"] == []
        assert "event=pair_waiting pair=a0:b0 missing=a0" in (tmp_path / "fwd.log").read_text()
        shown = subprocess.run([sys.executable, "-m", "mirrord", "status", "--socket", str(d.sock)],
                               capture_output=True, text=True, timeout=30)
        assert f"forwarder {fwd.pid}: pair 'a0:b0' waits for a0" in shown.stdout, shown.stdout + shown.stderr
        cap_tap = capture(late.fwd, "mirror0", "tap.pcap", extra=BIG)

        late.link_a()  # the input appears
        subprocess.run(["ip", "-n", late.fwd, "link", "add", "ana0", "type", "veth", "peer", "name", "acap0"],
                       check=True)  # and the output
        for dev in ("ana0", "acap0"):
            late._up(late.fwd, dev)
        wait(lambda: not late.fwd_status(d.run_dir, fwd.pid)["waiting"], "the pair started")
        wait(lambda: late.fwd_status(d.run_dir, fwd.pid)["registered"], "its rings registered")
        d.wait_for(lambda s: all(x["output"]["open"] for x in s["sessions"]), what="ana0 opened")
        cap_ana = capture(late.fwd, "acap0", "ana.pcap", extra=BIG)

        there = numbered(200)
        back = [f[6:12] + f[0:6] + f[12:] for f in numbered(100, size=300)]
        assert late.transfer(there, late.src, "s0", late.sink, "k0") == there
        assert late.transfer(back, late.sink, "k0", late.src, "s0") == back
        d.wait_for(lambda s: d.session("span")["counters"]["mirrored_packets"] == 200
                   and d.session("back")["counters"]["mirrored_packets"] == 25, what="every copy delivered")
        cap_tap.stop()
        cap_ana.stop()
        final = late.stop_forwarder(fwd)
    finally:
        d.stop()
    log = (tmp_path / "fwd.log").read_text()
    assert "event=pair_started pair=a0:b0" in log
    a, b = final["bindings"]
    assert (a["ingress"], a["rx_packets"], a["tx_packets"], a["mirror_sampled"], a["mirror_pushed"]) == (
        "a0", 200, 200, 200, 200)
    assert (b["ingress"], b["rx_packets"], b["mirror_sampled"], b["mirror_pushed"]) == ("b0", 100, 25, 25)
    _, on_tap = read_pcap(cap_tap.path)
    assert on_tap == there  # every frame, byte for byte, in order
    _, on_ana = read_pcap(cap_ana.path)
    assert on_ana == back[::4]  # frames 0, 4, 8, ... of b0


JUNOS = """\
/* the box this lab replaces */
forwarding-options {
    port-mirroring {
        input {
            rate 2;
            maximum-packet-length 64;
            ingress { interface ge-0/0/0.0; }
        }
        family inet {
            output { interface ge-0/0/9.0; }
        }
    }
}
"""
JUNOS_SET = """\
set forwarding-options port-mirroring instance back input ingress interface ge-0/0/1.0
set forwarding-options port-mirroring instance back output interface ge-0/0/8.0
"""


def test_imported_junos_config_checks_and_runs(late, tmp_path, capture):
    """import -> check-config -> the daemon and the forwarder run it: frames on the TAP."""
    src = tmp_path / "edge1.conf"
    src.write_text(JUNOS + JUNOS_SET)  # both forms in one file
    out = tmp_path / "imported.toml"
    r = subprocess.run([sys.executable, "-m", "mirrord", "import", "junos", str(src), "--map", "ge-0/0/0=a0",
                        "--map", "ge-0/0/1=b0", "--map", "ge-0/0/9=tap:mirror0", "--map", "ge-0/0/8=tap:mirror1",
                        "-o", str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    c = subprocess.run([sys.executable, "-m", "mirrord", "check-config", str(out)], capture_output=True,
                       text=True, timeout=60)
    assert c.returncode == 0, c.stderr
    assert c.stdout.splitlines()[1:] == [
        "  port-mirroring (id 0x%08x): a0 -> tap mirror0, 1 in 2, run_length 0, max_packet_length 64"
        % __import__("zlib").crc32(b"port-mirroring"),
        "    filter: none (every frame)",
        "  back (id 0x%08x): b0 -> tap mirror1, every frame, run_length 0, max_packet_length whole frame"
        % __import__("zlib").crc32(b"back"),
        "    filter: none (every frame)"]
    d = DaemonProc(tmp_path, out.read_text(), netns=late.fwd).start()
    late.procs.append(d.proc)
    try:
        late.link_a()
        cap0 = capture(late.fwd, "mirror0", "m0.pcap", extra=BIG)
        cap1 = capture(late.fwd, "mirror1", "m1.pcap", extra=BIG)
        fwd = late.start_forwarder_waiting(d.cfg)
        wait(lambda: late.fwd_status(d.run_dir, fwd.pid)["registered"], "rings registered")
        there = numbered(100, size=200)
        back = [f[6:12] + f[0:6] + f[12:] for f in numbered(50)]
        assert late.transfer(there, late.src, "s0", late.sink, "k0") == there
        assert late.transfer(back, late.sink, "k0", late.src, "s0") == back
        d.wait_for(lambda s: d.session("port-mirroring")["counters"]["mirrored_packets"] == 50
                   and d.session("back")["counters"]["mirrored_packets"] == 50, what="every copy delivered")
        cap0.stop()
        cap1.stop()
        late.stop_forwarder(fwd)
    finally:
        d.stop()
    _, m0 = read_pcap(cap0.path)
    assert m0 == [f[:64] for f in there[::2]]  # 1 in 2, cut to 64 bytes
    _, m1 = read_pcap(cap1.path)
    assert m1 == back


JUNOS_VLAN = """\
interfaces { ge-0/0/0 { vlan-tagging; unit 100 { vlan-id 100; } } }
forwarding-options { port-mirroring {
    input { ingress { interface ge-0/0/0.100; } }
    output { interface ge-0/0/9.0; } } }
"""


def test_imported_junos_vlan_unit_checks_and_runs(late, tmp_path, capture):
    """ge-0/0/0.100 -> { interface = "a0", vlan = 100 }: only VID 100 frames, tags intact."""
    from fixtures.frames import eth, ipv4_udp

    src, out = tmp_path / "vlan.conf", tmp_path / "imported.toml"
    src.write_text(JUNOS_VLAN)
    r = subprocess.run([sys.executable, "-m", "mirrord", "import", "junos", str(src), "--map", "ge-0/0/0=a0",
                        "--map", "ge-0/0/9=tap:mirror0", "-o", str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    c = subprocess.run([sys.executable, "-m", "mirrord", "check-config", str(out)], capture_output=True,
                       text=True, timeout=60)
    assert c.returncode == 0, c.stderr
    d = DaemonProc(tmp_path, out.read_text(), netns=late.fwd).start()
    late.procs.append(d.proc)
    try:
        late.link_a()
        cap = capture(late.fwd, "mirror0", "m0.pcap", extra=BIG)
        fwd = late.start_forwarder_waiting(d.cfg)
        wait(lambda: late.fwd_status(d.run_dir, fwd.pid)["registered"], "rings registered")
        frames = [eth(0x0800, ipv4_udp(i.to_bytes(4, "big") + bytes(60)), tags=tags)
                  for i in range(90) for tags in [((0x8100, 100),) if i % 3 == 0 else
                                                  ((0x8100, 200),) if i % 3 == 1 else ()]]
        assert late.transfer(frames, late.src, "s0", late.sink, "k0") == frames
        d.wait_for(lambda s: d.session("port-mirroring")["counters"]["mirrored_packets"] == 30,
                   what="the VID 100 copies delivered")
        cap.stop()
        late.stop_forwarder(fwd)
    finally:
        d.stop()
    _, got = read_pcap(cap.path)
    assert got == frames[0::3]  # the VID 100 frames only, tags and all
