"""The forwarder's XDP side as a user meets it: jumbo frames (AF_XDP multi-buffer) forwarded
and mirrored byte-identical, the kernel's own drop counters in status and /metrics, clear
reasons for failed starts, nothing left attached after one, the least privilege it runs
with, and a vanished egress link counted as such.

    src:s0 <-> a0:fwd:b0 <-> k0:sink       (MTU 9000 on every veth)
"""
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from frames import eth, ipv4_udp, read_pcap
from test_forward import SESSION, Lab, config

pytestmark = pytest.mark.root

JUMBO_SIZES = (1514, 3840, 3841, 4096, 9000, 9014)


class JumboLab(Lab):
    def __init__(self, tmp: Path, mtu: int = 9000):
        super().__init__(tmp)
        self.mtu = mtu

    def up(self):
        super().up()
        for ns, dev in ((self.src, "s0"), (self.fwd, "a0"), (self.fwd, "b0"), (self.sink, "k0")):
            subprocess.run(["ip", "-n", ns, "link", "set", dev, "mtu", str(self.mtu)], check=True)
        return self

    def forward_cmd(self, cfg: Path, *extra: str, pairs=("a0:b0",), wrap=()) -> list[str]:
        cmd = ["ip", "netns", "exec", self.fwd, *wrap, sys.executable, "-m", "mirrord", "forward", "-c", str(cfg)]
        for p in pairs:
            cmd += ["--pair", p]
        return cmd + list(extra)

    def start(self, cfg: Path, *extra: str, wrap=()) -> subprocess.Popen:
        p = subprocess.Popen(self.forward_cmd(cfg, *extra, wrap=wrap), stdout=subprocess.PIPE,
                             stderr=open(self.tmp / "fwd.log", "ab"), text=True)
        self.procs.append(p)
        line = p.stdout.readline()
        assert line.strip() == "forwarding", (line, (self.tmp / "fwd.log").read_text())
        return p

    def failed_start(self, cfg: Path, *extra: str, pairs=("a0:b0",)) -> subprocess.CompletedProcess:
        r = subprocess.run(self.forward_cmd(cfg, *extra, pairs=pairs), capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, (r.stdout, r.stderr)
        return r

    def xdp_attached(self, dev: str) -> bool:
        out = subprocess.run(["ip", "-n", self.fwd, "-d", "link", "show", dev], capture_output=True,
                             text=True, check=True).stdout
        return bool(re.search(r"\bxdp(generic|drv|offload)?\b|prog/xdp", out))


@pytest.fixture
def jlab(tmp_path):
    lab = JumboLab(tmp_path).up()
    yield lab
    lab.down()


def sized(sizes, start=0):
    """One IPv4/UDP frame of each total length, numbered, with a byte pattern to the end."""
    out = []
    for i, n in enumerate(sizes):
        pay = (start + i).to_bytes(4, "big") + bytes((start + i + k) & 0xFF for k in range(n - 46))
        f = eth(0x0800, ipv4_udp(pay))
        assert len(f) == n
        out.append(f)
    return out


def test_jumbo_frames_forwarded_and_mirrored_byte_identical_generic(jlab, tmp_path, capture):
    from daemon_proc import DaemonProc

    d = DaemonProc(tmp_path, SESSION.format(rate=1, run=0, mpl=0), netns=jlab.fwd).start()
    jlab.procs.append(d.proc)
    try:
        subprocess.run(["ip", "-n", jlab.fwd, "link", "set", "mirror0", "mtu", "9000", "up"], check=True)
        cap = capture(jlab.fwd, "mirror0")
        fwd = jlab.start(d.cfg)
        frames = sized(JUMBO_SIZES * 5)
        got = jlab.transfer(frames, jlab.src, "s0", jlab.sink, "k0")
        back = [f[6:12] + f[0:6] + f[12:] for f in sized(JUMBO_SIZES, start=100)]
        assert jlab.transfer(back, jlab.sink, "k0", jlab.src, "s0") == back
        d.wait_for(lambda st: sum(s["counters"]["mirrored_packets"] for s in st["sessions"]) == len(frames),
                   what="every copy delivered")
        cap.stop()
        st = jlab.stop_forwarder(fwd)
    finally:
        d.stop()
    assert [len(g) for g in got] == [len(f) for f in frames]
    assert got == frames
    _, mirrored = read_pcap(cap.path)
    assert [len(m) for m in mirrored] == [len(f) for f in frames]
    assert mirrored == frames
    a, b = st["bindings"]
    assert a["rx_packets"] == a["tx_packets"] == a["mirror_pushed"] == len(frames)
    assert a["rx_bytes"] == a["tx_bytes"] == sum(map(len, frames))
    assert b["rx_packets"] == b["tx_packets"] == len(back)
    assert all(v == 0 for k, v in a.items() if k.startswith(("xdp_rx_dropped", "xdp_rx_ring", "dropped_")))
