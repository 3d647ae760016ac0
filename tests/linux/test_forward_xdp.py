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
from fixtures.frames import eth, ipv4_udp, read_pcap
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

    def xdp_show(self, dev: str) -> str:
        return subprocess.run(["ip", "-n", self.fwd, "-d", "link", "show", dev], capture_output=True,
                              text=True, check=True).stdout

    def xdp_attached(self, dev: str) -> bool:
        return bool(re.search(r"\bxdp(generic|drv|offload)?\b|prog/xdp", self.xdp_show(dev)))


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


@pytest.mark.parametrize("mode", ["generic", "native"])
def test_jumbo_frames_forwarded_and_mirrored_byte_identical(jlab, tmp_path, capture, mode):
    """veth has native XDP with multi-buffer (xdp.frags) since Linux 6.0: with our program
    loaded with the frags flag, the peer MTU 9000 is accepted in native mode too."""
    from fixtures.daemon import DaemonProc

    d = DaemonProc(tmp_path, SESSION.format(rate=1, run=0, mpl=0), netns=jlab.fwd).start()
    jlab.procs.append(d.proc)
    try:
        subprocess.run(["ip", "-n", jlab.fwd, "link", "set", "mirror0", "mtu", "9000", "up"], check=True)
        cap = capture(jlab.fwd, "mirror0")
        fwd = jlab.start(d.cfg, *(["--native"] if mode == "native" else []))
        shown = jlab.xdp_show("a0")
        assert re.search(r"mtu 9000 %s " % ("xdp" if mode == "native" else "xdpgeneric"), shown), shown
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


def _numbered(n, size=64):
    return sized([size] * n)


def _send(lab, ns, dev, frames):
    from fixtures import pktio
    from fixtures.pktio import write_frames

    fin = lab.tmp / "send.frames"
    write_frames(fin, frames)
    subprocess.run(["ip", "netns", "exec", ns, sys.executable, pktio.__file__,
                    "send", dev, str(fin)], check=True, timeout=60)


def test_kernel_drops_at_the_socket_show_in_status_cli_and_metrics(jlab, tmp_path):
    """A stopped forwarder stops refilling its fill ring (2048 frames): the kernel drops the
    rest at the socket.  Those drops were invisible; now every frame sent is either received
    or in the kernel's count, in the status file, `mirrord status` and /metrics."""
    from fixtures.daemon import DaemonProc

    d = DaemonProc(tmp_path, SESSION.format(rate=1, run=0, mpl=0), netns=jlab.fwd).start()
    jlab.procs.append(d.proc)
    try:
        fwd = jlab.start(d.cfg)
        first = _numbered(100)
        assert jlab.transfer(first, jlab.src, "s0", jlab.sink, "k0") == first
        fwd.send_signal(signal.SIGSTOP)
        try:
            _send(jlab, jlab.src, "s0", _numbered(3000))
        finally:
            fwd.send_signal(signal.SIGCONT)

        def settled(st):
            b = st["forwarders"] and st["forwarders"][0]["bindings"][0]
            return b and b["rx_packets"] + b["xdp_rx_dropped"] + b["xdp_rx_ring_full"] == 3100

        st = d.wait_for(settled, what="every frame received or counted by the kernel")
        m = d.metrics()
        cli = subprocess.run(["ip", "netns", "exec", jlab.fwd, sys.executable, "-m", "mirrord", "status", "-c",
                              str(d.cfg)], capture_output=True, text=True, timeout=30)
        final = jlab.stop_forwarder(fwd)
    finally:
        d.stop()
    a = st["forwarders"][0]["bindings"][0]
    kernel = a["xdp_rx_dropped"] + a["xdp_rx_ring_full"]
    assert kernel > 0 and a["rx_packets"] < 3100
    assert a["xdp_rx_fill_ring_empty_descs"] > 0  # the reason: the fill ring ran dry
    assert a["rx_packets"] == a["tx_packets"]      # what the forwarder got, it forwarded
    fa = final["bindings"][0]
    assert fa["xdp_rx_dropped"] == a["xdp_rx_dropped"] and fa["rx_packets"] == a["rx_packets"]
    a0 = (("interface", "a0"), ("queue", "0"))
    assert m[("mirrord_forwarder_xdp_rx_dropped_total", a0)] == a["xdp_rx_dropped"]
    assert m[("mirrord_forwarder_xdp_rx_ring_full_total", a0)] == a["xdp_rx_ring_full"]
    assert m[("mirrord_forwarder_rx_packets_total", a0)] + kernel == 3100
    assert m[("mirrord_forwarder_tx_dropped_packets_total", (*a0, ("reason", "tx_full")))] == 0
    assert cli.returncode == 0, cli.stderr
    row = next(ln for ln in cli.stdout.splitlines() if ln.startswith("a0->b0 q0"))
    assert f"xdp_rx_dropped={a['xdp_rx_dropped']}" in row, cli.stdout


def test_egress_down_counts_dropped_tx_down_and_a_deleted_egress_makes_the_pair_wait(jlab, tmp_path):
    """An egress set down drops what it cannot send as dropped_tx_down (not tx_full); an
    egress deleted takes its pair down (it waits to be made again, docs/fast-path.md): the
    forwarder runs on and its final line keeps the pair's counts."""
    cfg = config(tmp_path, "")
    fwd = jlab.start(cfg)
    first = _numbered(100)
    assert jlab.transfer(first, jlab.src, "s0", jlab.sink, "k0") == first
    subprocess.run(["ip", "-n", jlab.fwd, "link", "set", "b0", "down"], check=True)
    _send(jlab, jlab.src, "s0", _numbered(200))
    status = next((tmp_path / "run").glob("forwarder-*.json"))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        a = json.loads(status.read_text())["bindings"][0]
        if a["rx_packets"] == 300:
            break
        time.sleep(0.1)
    assert (a["rx_packets"], a["tx_packets"], a["dropped_tx_down"], a["dropped_tx_full"]) == (300, 100, 200, 0)
    subprocess.run(["ip", "-n", jlab.fwd, "link", "del", "b0"], check=True)  # k0 goes with it
    while time.monotonic() < deadline and not json.loads(status.read_text())["waiting"]:
        time.sleep(0.1)
    assert fwd.poll() is None  # still running
    st = jlab.stop_forwarder(fwd)
    assert st["waiting"] == [{"pair": "a0:b0", "missing": ["b0"], "error": None}]
    a = st["bindings"][0]
    assert (a["state"], a["rx_packets"], a["tx_packets"], a["dropped_tx_down"], a["dropped_tx_full"]) == (
        "down", 300, 100, 200, 0)


def _one_line_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    out = (r.stdout + r.stderr).strip().splitlines()
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    hits = [ln for ln in out if all(n in ln for n in needles)]
    assert len(hits) == 1, out
    assert not any("libbpf:" in ln or "libxdp:" in ln for ln in out), out  # said once, in our line
    return hits[0]


def test_failed_start_detaches_what_it_attached_and_the_next_start_works(jlab, tmp_path):
    cfg = config(tmp_path, "")
    # the second interface is missing: not an error, the pair waits for it, and nothing is
    # attached to a0 meanwhile (test_missing_interface.py: it starts once nosuch appears)
    p = subprocess.Popen(jlab.forward_cmd(cfg, pairs=("a0:nosuch",)), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    jlab.procs.append(p)
    assert p.stdout.readline().strip() == "forwarding"
    assert not jlab.xdp_attached("a0")
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=15)
    assert p.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["waiting"] == [
        {"pair": "a0:nosuch", "missing": ["nosuch"], "error": None}]
    assert "event=pair_waiting pair=a0:nosuch missing=nosuch" in err
    # native mode: a0 (veth) attaches, then lo (no native XDP in its driver) fails in the
    # kernel, whose own reason (netlink extack, printed by libbpf) is in the line
    subprocess.run(["ip", "-n", jlab.fwd, "link", "set", "lo", "up"], check=True)
    line = _one_line_error(jlab.failed_start(cfg, "--native", pairs=("a0:lo",)), "interface lo",
                           "attach XDP (native)")
    assert "does not support XDP in native mode" in line, line
    assert not jlab.xdp_attached("a0") and not jlab.xdp_attached("lo")
    # a forwarder killed outright leaves nothing either: the kernel closes its bpf_links
    fwd = jlab.start(cfg)
    assert jlab.xdp_attached("a0") and jlab.xdp_attached("b0")
    fwd.kill()
    fwd.wait(10)
    deadline = time.monotonic() + 10
    while jlab.xdp_attached("a0") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not jlab.xdp_attached("a0") and not jlab.xdp_attached("b0")
    fwd = jlab.start(cfg)
    frames = _numbered(300, size=1514)
    assert jlab.transfer(frames, jlab.src, "s0", jlab.sink, "k0") == frames
    jlab.stop_forwarder(fwd)
    assert not jlab.xdp_attached("a0") and not jlab.xdp_attached("b0")


def test_second_forwarder_on_a_served_queue_says_why_and_leaves_the_first_alone(jlab, tmp_path):
    cfg = config(tmp_path, "")
    fwd = jlab.start(cfg)
    for extra in ((), ("--native",)):
        line = _one_line_error(jlab.failed_start(cfg, *extra), "interface a0 queue 0")
        assert "another AF_XDP socket is bound to this queue" in line, line
        # the failed start detached nothing it had not attached: the first one's program stays
        assert "xdpgeneric" in jlab.xdp_show("a0") and "xdpgeneric" in jlab.xdp_show("b0")
    frames = _numbered(300)
    assert jlab.transfer(frames, jlab.src, "s0", jlab.sink, "k0") == frames
    assert jlab.stop_forwarder(fwd)["bindings"][0]["tx_packets"] == 300


CAPS = {"net_admin": 12, "net_raw": 13, "ipc_lock": 14, "bpf": 39}
MISSING = {  # the cap left out -> what the one-line error says
    "net_admin": "needs CAP_BPF and CAP_NET_ADMIN",
    "net_raw": "needs CAP_NET_RAW",
    "ipc_lock": "needs CAP_IPC_LOCK",
    "bpf": "needs CAP_BPF and CAP_NET_ADMIN",
}


def _setpriv(caps) -> list[str]:
    """Root without CAP_SYS_ADMIN: only `caps` survive exec; the memlock limit as systemd's
    default (8 MiB), below the UMEM, so CAP_IPC_LOCK is really what lets it register."""
    return ["prlimit", "--memlock=8388608:8388608", "setpriv", "--inh-caps=-all",
            "--bounding-set=-all," + ",".join("+" + c for c in caps), "--"]


@pytest.mark.parametrize("mode", ["generic", "native"])
def test_forwards_with_exactly_net_admin_net_raw_bpf_ipc_lock(jlab, tmp_path, mode):
    cfg = config(tmp_path, SESSION.format(rate=1, run=0, mpl=0))
    extra = ["--native"] if mode == "native" else []
    fwd = jlab.start(cfg, *extra, wrap=_setpriv(CAPS))
    eff = int(Path(f"/proc/{fwd.pid}/status").read_text().split("CapEff:")[1].split()[0], 16)
    assert eff == sum(1 << b for b in CAPS.values())  # no CAP_SYS_ADMIN, no CAP_PERFMON
    frames = sized(JUMBO_SIZES * 3)
    assert jlab.transfer(frames, jlab.src, "s0", jlab.sink, "k0") == frames
    a = jlab.stop_forwarder(fwd)["bindings"][0]
    assert a["tx_packets"] == a["mirror_pushed"] == len(frames)
    assert not jlab.xdp_attached("a0")
    for cap, reason in MISSING.items():  # and each of them is needed
        r = subprocess.run(jlab.forward_cmd(cfg, *extra, wrap=_setpriv(set(CAPS) - {cap})), capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 1, (cap, r.stdout, r.stderr)
        _one_line_error(r, "interface a0", reason)
        assert not jlab.xdp_attached("a0"), cap
