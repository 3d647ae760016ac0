"""The AF_XDP fast path for real: three namespaces (source, forwarder, sink) joined by
veth pairs; the forwarder (`mirrord forward`) runs in the middle one in generic XDP mode.

    src:s0 <-> a0:fwd:b0 <-> k0:sink
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from fixtures.frames import eth, ipv4_udp, read_pcap
from fixtures import pktio
from fixtures.pktio import read_frames, write_frames


pytestmark = pytest.mark.root
PKTIO = pktio.__file__


class Lab:
    def __init__(self, tmp: Path):
        tag = uuid.uuid4().hex[:6]
        self.src, self.fwd, self.sink = f"mrs-{tag}", f"mrf-{tag}", f"mrk-{tag}"
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []

    def up(self):
        for ns in (self.src, self.fwd, self.sink):
            subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "link", "add", "s0", "netns", self.src, "type", "veth", "peer", "name", "a0",
                        "netns", self.fwd], check=True)
        subprocess.run(["ip", "link", "add", "b0", "netns", self.fwd, "type", "veth", "peer", "name", "k0",
                        "netns", self.sink], check=True)
        for ns, dev in ((self.src, "s0"), (self.fwd, "a0"), (self.fwd, "b0"), (self.sink, "k0")):
            subprocess.run(["ip", "-n", ns, "link", "set", dev, "mtu", "1500", "addrgenmode", "none", "up"],
                           check=True)
        return self

    def down(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for ns in (self.src, self.fwd, self.sink):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)

    def start_forwarder(self, cfg: Path, wrap=(), ready_file: Path | None = None, env=None) -> subprocess.Popen:
        extra = ["--ready-file", str(ready_file)] if ready_file else []
        p = subprocess.Popen(["ip", "netns", "exec", self.fwd, *wrap, sys.executable, "-m", "mirrord", "forward",
                              "-c", str(cfg), "--pair", "a0:b0", *extra], env={**os.environ, **(env or {})},
                             stdout=subprocess.PIPE, stderr=open(self.tmp / "fwd.log", "ab"), text=True)
        self.procs.append(p)
        line = p.stdout.readline()
        assert line.strip() == "forwarding", (line, (self.tmp / "fwd.log").read_text())
        return p

    def stop_forwarder(self, p: subprocess.Popen) -> dict:
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=15)
        assert p.returncode == 0, (self.tmp / "fwd.log").read_text()
        return json.loads(out.strip().splitlines()[-1])

    def transfer(self, frames, from_ns, from_dev, to_ns, to_dev, timeout=15.0):
        """Send frames from one end and return what arrived at the other."""
        fin, fout = self.tmp / "in.frames", self.tmp / "out.frames"
        write_frames(fin, frames)
        r = subprocess.Popen(["ip", "netns", "exec", to_ns, sys.executable, PKTIO, "recv", to_dev,
                              str(len(frames)), str(timeout), str(fout)], stdout=subprocess.PIPE, text=True)
        self.procs.append(r)
        assert r.stdout.readline().strip() == "ready"
        subprocess.run(["ip", "netns", "exec", from_ns, sys.executable, PKTIO, "send", from_dev, str(fin)],
                       check=True, timeout=60)
        r.wait(timeout + 10)
        return read_frames(fout)


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path).up()
    yield lab
    lab.down()


def numbered(n, size=64, tagged_every=0):
    out = []
    for i in range(n):
        body = ipv4_udp(i.to_bytes(4, "big") + bytes(max(0, size - 46)))
        tags = ((0x8100, 100 + i % 7),) if tagged_every and i % tagged_every == 0 else ()
        out.append(eth(0x0800, body, tags=tags))
    return out


def config(tmp: Path, sessions: str) -> Path:
    p = tmp / "mirrord.toml"
    p.write_text(f'[daemon]\nruntime_dir = "{tmp / "run"}"\n' + sessions)
    return p


SESSION = """
[[session]]
name = "span"
input = ["a0"]
rate = {rate}
run_length = {run}
max_packet_length = {mpl}
output = {{ type = "tap", name = "mirror0" }}
"""


@pytest.mark.parametrize("mirroring", [False, True])
def test_every_frame_arrives_byte_identical_both_ways(lab, tmp_path, mirroring):
    cfg = config(tmp_path, SESSION.format(rate=1, run=0, mpl=0) if mirroring else "")
    fwd = lab.start_forwarder(cfg)
    frames = numbered(500, tagged_every=5)
    got = lab.transfer(frames, lab.src, "s0", lab.sink, "k0")
    assert got == frames
    back = [f[6:12] + f[0:6] + f[12:] for f in numbered(300, size=1400)]
    assert lab.transfer(back, lab.sink, "k0", lab.src, "s0") == back
    st = lab.stop_forwarder(fwd)
    a, b = st["bindings"]
    assert (a["ingress"], a["rx_packets"], a["tx_packets"], a["dropped_tx_full"]) == ("a0", 500, 500, 0)
    assert (b["ingress"], b["rx_packets"], b["tx_packets"]) == ("b0", 300, 300)
    # a0 is a session input: every frame is sampled and pushed (nobody drains, 4 MiB holds them)
    assert a["mirror_sampled"] == a["mirror_pushed"] == (500 if mirroring else 0)
    assert b["mirror_sampled"] == 0  # b0 is nobody's input


@pytest.mark.parametrize("rate,run,expected", [(100, 0, 10), (100, 2, 30), (0, 0, 1000), (7, 0, 143)])
def test_sampling_is_exact_per_binding(lab, tmp_path, rate, run, expected):
    cfg = config(tmp_path, SESSION.format(rate=rate, run=run, mpl=0))
    fwd = lab.start_forwarder(cfg)
    frames = numbered(1000)
    assert len(lab.transfer(frames, lab.src, "s0", lab.sink, "k0")) == 1000
    a = lab.stop_forwarder(fwd)["bindings"][0]
    assert a["rx_packets"] == 1000
    assert a["mirror_sampled"] == expected
    assert a["mirror_sampled"] == a["mirror_pushed"] + a["mirror_dropped_ring_full"] + a["mirror_dropped_no_ring"]


def test_mirror_tap_shows_the_sampled_original_frames_truncated_as_configured(lab, tmp_path, capture):
    from fixtures.daemon import DaemonProc

    sessions = SESSION.format(rate=10, run=1, mpl=64)
    d = DaemonProc(tmp_path, sessions, netns=lab.fwd).start()
    lab.procs.append(d.proc)
    try:
        subprocess.run(["ip", "-n", lab.fwd, "link", "set", "mirror0", "up"], check=True)
        cap = capture(lab.fwd, "mirror0")
        fwd = lab.start_forwarder(d.cfg)
        frames = numbered(200, size=300, tagged_every=3)
        assert len(lab.transfer(frames, lab.src, "s0", lab.sink, "k0")) == 200
        d.wait_for(lambda st: sum(s["counters"]["mirrored_packets"] for s in st["sessions"]) == 40,
                   what="40 copies delivered")
        # the forwarder's status file (read by the daemon) is rewritten every 0.2 s
        st = d.wait_for(lambda st: st["forwarders"] and st["forwarders"][0]["bindings"][0]["mirror_sampled"] == 40,
                        what="forwarder status caught up")
        m = d.metrics()
        cap.stop()
        fst = lab.stop_forwarder(fwd)
    finally:
        d.stop()
    # rate 10 with run_length 1: frames 0,1, 10,11, 20,21, ...; cut to 64 bytes
    want = [f[:64] for i, f in enumerate(frames) if i % 10 in (0, 1)]
    _, got = read_pcap(cap.path)
    assert [g.hex() for g in got] == [w.hex() for w in want]
    assert st["sessions"][0]["counters"]["truncated"] == 40
    assert fst["bindings"][0]["mirror_pushed"] == 40
    fw = st["forwarders"]
    assert fw and fw[0]["bindings"][0]["mirror_sampled"] == 40
    # the fast path's counters are in /metrics too, per ingress interface and queue
    a0 = (("interface", "a0"), ("queue", "0"))
    assert m[("mirrord_forwarder_mirror_sampled_packets_total", a0)] == 40
    assert m[("mirrord_forwarder_rx_packets_total", a0)] == 200
    assert m[("mirrord_forwarder_mirror_dropped_packets_total", (*a0, ("reason", "ring_full")))] == 0
    assert m[("mirrord_mirrored_packets_total", (("session", "span"),))] == 40


def test_stopped_or_killed_daemon_never_costs_a_forwarded_frame(lab, tmp_path):
    from fixtures.daemon import DaemonProc

    d = DaemonProc(tmp_path, SESSION.format(rate=1, run=0, mpl=0), netns=lab.fwd).start()
    lab.procs.append(d.proc)
    try:
        fwd = lab.start_forwarder(d.cfg)
        st = d.wait_for(lambda st: len(st["rings"]) == 2, what="rings attached")
        # the forwarder handed its rings over with their descriptors (no pidfd_getfd needed)
        assert sorted(r["name"] for r in st["rings"]) == ["a0-q0.ring", "b0-q0.ring"]
        assert all(r["eventfd"] for r in st["rings"])
        assert d.log.read_text().count("via=scm_rights") == 2
        frames = numbered(3000)
        assert lab.transfer(frames[:1000], lab.src, "s0", lab.sink, "k0") == frames[:1000]
        d.proc.send_signal(signal.SIGSTOP)  # the ring (4 MiB) fills; forwarding goes on
        try:
            got = lab.transfer(frames * 20, lab.src, "s0", lab.sink, "k0", timeout=60)
        finally:
            d.proc.send_signal(signal.SIGCONT)
        assert len(got) == 60000 and got[:3000] == frames
        d.kill(signal.SIGKILL)
        assert lab.transfer(frames[:1000], lab.src, "s0", lab.sink, "k0") == frames[:1000]
        d.start()  # mirroring resumes by itself: the new daemon finds the rings
        d.wait_for(lambda st: len(st["rings"]) == 2, what="rings re-attached")
        before = d.status()["sessions"][0]["counters"]["mirrored_packets"]
        lab.transfer(frames[:500], lab.src, "s0", lab.sink, "k0")
        d.wait_for(lambda st: st["sessions"][0]["counters"]["mirrored_packets"] >= before + 500,
                   what="mirroring resumed")
        a = lab.stop_forwarder(fwd)["bindings"][0]
    finally:
        d.stop()
    assert a["rx_packets"] == a["tx_packets"] == 1000 + 60000 + 1000 + 500
    assert a["dropped_tx_full"] == 0
    assert a["mirror_dropped_ring_full"] > 0  # the stopped daemon let the ring fill
    assert a["mirror_sampled"] == a["mirror_pushed"] + a["mirror_dropped_ring_full"] == a["rx_packets"]


def forwarder_status(lab, fwd) -> dict:
    """The forwarder's own status file (rewritten every 0.2 s)."""
    return json.loads((lab.tmp / "run" / f"forwarder-{fwd.pid}.json").read_text())


def wait_status(lab, fwd, pred, what, timeout=10.0) -> tuple[dict, float]:
    """The forwarder's status once ``pred`` holds, and how long that took."""
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < timeout:
        try:
            last = forwarder_status(lab, fwd)
        except (OSError, ValueError):  # between two atomic writes, or not written yet
            pass
        else:
            if pred(last):
                return last, time.monotonic() - t0
        time.sleep(0.02)
    raise AssertionError(f"{what} not reached within {timeout}s; last forwarder status: {last}\n"
                         + (lab.tmp / "fwd.log").read_text())


def test_one_reload_reaches_both_and_a_refused_one_neither(lab, tmp_path):
    """`mirrord reload` (the control socket's reload, as SIGHUP to the daemon) changes the
    forwarder's sampling: it follows the daemon's accepted config, not its own reading of
    the file, so a reload the daemon refuses changes nothing in the forwarder either."""
    from fixtures.daemon import DaemonProc

    d = DaemonProc(tmp_path, SESSION.format(rate=10, run=0, mpl=0), netns=lab.fwd).start()
    lab.procs.append(d.proc)
    try:
        fwd = lab.start_forwarder(d.cfg)
        inst = d.status()["instance"]
        # a daemon that is up gives its config before the forwarder says "forwarding"
        st = forwarder_status(lab, fwd)
        assert (st["config_from"], st["instance"], st["generation"]) == ("daemon", inst, 1)
        frames = numbered(1000)
        assert lab.transfer(frames, lab.src, "s0", lab.sink, "k0") == frames
        d.cfg.write_text(d.cfg.read_text().replace("rate = 10", "rate = 100"))
        assert d.request({"op": "reload"}) == {"ok": True, "generation": 2}
        st, took = wait_status(lab, fwd, lambda s: s["generation"] == 2, "generation 2 in the forwarder")
        print(f"reload in force in the forwarder {took:.3f}s after the daemon accepted it")
        assert st["instance"] == inst
        assert lab.transfer(frames, lab.src, "s0", lab.sink, "k0") == frames
        # refused: a [daemon] key needs a restart; its new rate must not reach the forwarder
        d.cfg.write_text(d.cfg.read_text().replace("http =", "allowed_uids = [4242]\nhttp =")
                         .replace("rate = 100", "rate = 7"))
        r = d.request({"op": "reload"})
        assert not r["ok"] and "allowed_uids" in r["error"], r
        time.sleep(1.0)  # four polls of the forwarder
        assert forwarder_status(lab, fwd)["generation"] == 2
        assert lab.transfer(frames, lab.src, "s0", lab.sink, "k0") == frames
        # status and /metrics show both at one generation
        ds = d.wait_for(lambda s: s["forwarders"] and s["forwarders"][0]["bindings"][0]["rx_packets"] == 3000,
                        what="forwarder status caught up")
        f = ds["forwarders"][0]
        assert (ds["instance"], ds["generation"]) == (f["instance"], f["generation"]) == (inst, 2)
        m = d.metrics()
        pid = (("pid", str(fwd.pid)),)
        assert m[("mirrord_forwarder_config_generation", pid)] == 2
        assert m[("mirrord_forwarder_config_in_sync", pid)] == 1
        assert m[("mirrord_forwarder_registered", pid)] == 1
        out = subprocess.run([sys.executable, "-m", "mirrord", "status", "--socket", str(d.sock)],
                             capture_output=True, text=True, check=True).stdout
        row = next(ln.split() for ln in out.splitlines() if ln.split()[:1] == [str(fwd.pid)])
        assert row == [str(fwd.pid), "daemon", "2", "yes", "yes"], out
        st = lab.stop_forwarder(fwd)
    finally:
        d.stop()
    a = st["bindings"][0]
    assert a["rx_packets"] == a["tx_packets"] == 3000
    # k counts on across swaps: k=0..999 at 1 in 10, k=1000..2999 at 1 in 100
    assert a["mirror_sampled"] == 100 + 10 + 10
    assert "reload_applied" not in (tmp_path / "fwd.log").read_text()  # its own file is not re-read


def test_sighup_asks_the_daemon_and_never_applies_the_file_alone(lab, tmp_path):
    """The forwarder's SIGHUP re-polls the daemon; it no longer applies the file itself."""
    from fixtures.daemon import DaemonProc

    d = DaemonProc(tmp_path, SESSION.format(rate=10, run=0, mpl=0), netns=lab.fwd).start()
    lab.procs.append(d.proc)
    try:
        fwd = lab.start_forwarder(d.cfg)
        d.cfg.write_text(d.cfg.read_text().replace("rate = 10", "rate = 1"))
        fwd.send_signal(signal.SIGHUP)  # the daemon did not reload: nothing changes
        lab_log = tmp_path / "fwd.log"
        deadline = time.monotonic() + 10
        while "event=reload_requested" not in lab_log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "event=reload_requested action=ask_daemon" in lab_log.read_text()
        frames = numbered(1000)
        assert lab.transfer(frames, lab.src, "s0", lab.sink, "k0") == frames
        assert forwarder_status(lab, fwd)["generation"] == 1
        st = lab.stop_forwarder(fwd)
    finally:
        d.stop()
    assert st["bindings"][0]["mirror_sampled"] == 100


def test_without_a_daemon_the_file_gives_the_sampling(lab, tmp_path):
    cfg = config(tmp_path, SESSION.format(rate=7, run=0, mpl=0))
    fwd = lab.start_forwarder(cfg)
    frames = numbered(1000)
    assert lab.transfer(frames, lab.src, "s0", lab.sink, "k0") == frames
    st = lab.stop_forwarder(fwd)
    assert (st["config_from"], st["generation"], st["registered"]) == ("file", None, False)
    assert "ENOENT" in st["daemon"]["error"]
    assert st["bindings"][0]["mirror_sampled"] == 143  # ceil(1000 / 7)


NO_PTRACE = ["setpriv", "--bounding-set", "-sys_ptrace"]


def test_restarted_daemon_gets_the_rings_again_with_their_eventfds(lab, tmp_path):
    """A daemon without CAP_SYS_PTRACE (as under its unit) cannot take the forwarder's
    eventfd itself: it finds the ring files but would have to poll them.  The forwarder
    sees the new daemon instance and registers again, handing over the eventfds."""
    from fixtures.daemon import DaemonProc

    d = DaemonProc(tmp_path, SESSION.format(rate=1, run=0, mpl=0), netns=lab.fwd, wrap=NO_PTRACE).start()
    lab.procs.append(d.proc)
    try:
        fwd = lab.start_forwarder(d.cfg)
        def attached(s):
            return len(s["rings"]) == 2 and all(r["eventfd"] and r["via"] == "scm_rights" for r in s["rings"])

        st = d.wait_for(attached, what="rings registered with their eventfds")
        first = st["instance"]
        frames = numbered(500)
        assert lab.transfer(frames, lab.src, "s0", lab.sink, "k0") == frames
        d.wait_for(lambda s: s["sessions"][0]["counters"]["mirrored_packets"] == 500, what="drained")
        d.kill(signal.SIGKILL)
        assert lab.transfer(frames, lab.src, "s0", lab.sink, "k0") == frames  # forwarding goes on
        d.start()
        def again(s):
            f = s["forwarders"][0] if s["forwarders"] else {}
            return attached(s) and s["instance"] != first and f.get("registered") and f["instance"] == s["instance"]
        st = d.wait_for(again, what="the forwarder registered with the new daemon")
        log = d.log.read_text()
        # the restarted daemon found the files first and could only poll them ...
        assert log.count("event=ring_no_eventfd") == 2, log
        # ... until the forwarder handed over the eventfds
        assert log.count("re-attached with the eventfd the producer passed") == 2, log
        f = st["forwarders"][0]
        assert f["register_error"] is None and all(r["registered"] for r in f["rings"])
        assert lab.transfer(frames, lab.src, "s0", lab.sink, "k0") == frames
        # 500 more copies: the 500 sent while no daemon ran (kept in the ring) + these 500
        d.wait_for(lambda s: s["sessions"][0]["counters"]["mirrored_packets"] == 1000,
                   what="mirroring resumed")
        fst = lab.stop_forwarder(fwd)
    finally:
        d.stop()
    flog = (tmp_path / "fwd.log").read_text()
    assert flog.count("event=registered") == 2, flog
    a = fst["bindings"][0]
    assert a["rx_packets"] == a["tx_packets"] == 1500
    assert a["mirror_sampled"] == a["mirror_pushed"] == 1500


@pytest.mark.parametrize("how", ["directory", "mode_000"])
def test_unreachable_daemon_is_logged_with_its_errno_and_shown_forwarding_goes_on(lab, tmp_path, how):
    from fixtures.daemon import DaemonProc

    d = DaemonProc(tmp_path, SESSION.format(rate=1, run=0, mpl=0), netns=lab.fwd)
    wrap = []
    if how == "directory":  # a directory where the socket should be (no daemon yet)
        d.sock.mkdir(parents=True)
        errno_name = "ECONNREFUSED"
    else:  # the socket exists but the forwarder may not connect (root without CAP_DAC_OVERRIDE)
        d.start()
        lab.procs.append(d.proc)
        d.sock.chmod(0)
        wrap = ["setpriv", "--bounding-set", "-dac_override"]
        errno_name = "EACCES"
    try:
        fwd = lab.start_forwarder(d.cfg, wrap=wrap)
        st, _ = wait_status(lab, fwd, lambda s: s["daemon"]["error"], "the error in status")
        assert errno_name in st["daemon"]["error"] and str(d.sock) in st["daemon"]["error"]
        assert st["registered"] is False and errno_name in st["register_error"]
        frames = numbered(500)
        assert lab.transfer(frames, lab.src, "s0", lab.sink, "k0") == frames
        time.sleep(1.5)  # several retries meanwhile: still one line
        log = (tmp_path / "fwd.log").read_text()
        assert log.count("event=daemon_unreachable") == 1 and errno_name in log, log
        if how == "directory":
            d.sock.rmdir()
            d.start()
            lab.procs.append(d.proc)
        else:
            d.sock.chmod(0o600)
        st, _ = wait_status(lab, fwd, lambda s: s["registered"], "registered once reachable")
        assert st["daemon"]["error"] is None and st["register_error"] is None
        assert st["instance"] == d.status()["instance"]
        assert "event=daemon_reachable" in (tmp_path / "fwd.log").read_text()
        fst = lab.stop_forwarder(fwd)
    finally:
        d.stop()
    assert fst["bindings"][0]["rx_packets"] == fst["bindings"][0]["tx_packets"] == 500


def test_errors_go_to_stderr_and_the_ready_file_says_when_forwarding(lab, tmp_path):
    cfg = config(tmp_path, SESSION.format(rate=1, run=0, mpl=0))
    # (a missing interface is not an error: the pair waits for it, tests/linux/test_missing_interface.py;
    # a0 bound twice on one queue is)
    bad = subprocess.run(["ip", "netns", "exec", lab.fwd, sys.executable, "-m", "mirrord", "forward",
                          "-c", str(cfg), "--pair", "a0:b0", "--pair", "a0:b0"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 1 and bad.stdout == ""
    last = bad.stderr.splitlines()[-1]  # (libbpf/libxdp print their own lines before ours)
    assert last.startswith("mirrord: forward: ") and "a0" in last, bad.stderr
    ready = tmp_path / "fwd.ready"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(10)
    with notify:
        fwd = lab.start_forwarder(cfg, ready_file=ready, env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
        assert json.loads(ready.read_text())["pid"] == fwd.pid
        msg = notify.recv(4096).decode().split("\n")
        assert msg[0] == "READY=1" and msg[1] == "STATUS=forwarding a0<->b0", msg
        frames = numbered(100)
        assert lab.transfer(frames, lab.src, "s0", lab.sink, "k0") == frames
        lab.stop_forwarder(fwd)
        assert notify.recv(4096).decode().startswith("STOPPING=1")
    assert not ready.exists()


def test_two_queues_two_workers_every_frame_forwarded_and_accounted(tmp_path):
    tag = uuid.uuid4().hex[:6]
    lab = Lab(tmp_path)
    lab.src, lab.fwd, lab.sink = f"mrs-{tag}", f"mrf-{tag}", f"mrk-{tag}"
    try:
        for ns in (lab.src, lab.fwd, lab.sink):
            subprocess.run(["ip", "netns", "add", ns], check=True)
        q2 = ["numtxqueues", "2", "numrxqueues", "2"]
        subprocess.run(["ip", "link", "add", "s0", "netns", lab.src, *q2, "type", "veth", "peer", "name", "a0",
                        "netns", lab.fwd, *q2], check=True)
        subprocess.run(["ip", "link", "add", "b0", "netns", lab.fwd, *q2, "type", "veth", "peer", "name", "k0",
                        "netns", lab.sink, *q2], check=True)
        for ns, dev in ((lab.src, "s0"), (lab.fwd, "a0"), (lab.fwd, "b0"), (lab.sink, "k0")):
            subprocess.run(["ip", "-n", ns, "link", "set", dev, "addrgenmode", "none", "up"], check=True)
        cfg = config(tmp_path, SESSION.format(rate=1, run=0, mpl=0))
        p = subprocess.Popen(["ip", "netns", "exec", lab.fwd, sys.executable, "-m", "mirrord", "forward",
                              "-c", str(cfg), "--pair", "a0:b0", "--queues", "2"],
                             stdout=subprocess.PIPE, stderr=open(tmp_path / "fwd.log", "ab"), text=True)
        lab.procs.append(p)
        assert p.stdout.readline().strip() == "forwarding", (tmp_path / "fwd.log").read_text()
        rings = sorted(f.name for f in (tmp_path / "run").glob("*.ring"))
        assert rings == ["a0-q0.ring", "a0-q1.ring", "b0-q0.ring", "b0-q1.ring"]
        frames = numbered(600)
        got = lab.transfer(frames, lab.src, "s0", lab.sink, "k0")
        assert sorted(got) == sorted(frames)  # queues may interleave; nothing lost or changed
        st = lab.stop_forwarder(p)
    finally:
        lab.down()
    a = [b for b in st["bindings"] if b["ingress"] == "a0"]
    assert sorted(b["queue"] for b in a) == [0, 1]
    assert sum(b["rx_packets"] for b in a) == sum(b["tx_packets"] for b in a) == 600
    for b in a:  # each binding samples its own frames, exactly
        assert b["mirror_sampled"] == b["mirror_pushed"] == b["rx_packets"]


def test_forwarding_goes_on_when_the_runtime_directory_is_removed(lab, tmp_path):
    cfg = config(tmp_path, SESSION.format(rate=1, run=0, mpl=0))
    fwd = lab.start_forwarder(cfg)
    frames = numbered(500)
    assert lab.transfer(frames, lab.src, "s0", lab.sink, "k0") == frames
    shutil.rmtree(tmp_path / "run")  # rings unlinked, status file gone: mapped rings stay
    time.sleep(0.5)                  # a few status writes fail meanwhile
    assert lab.transfer(frames, lab.src, "s0", lab.sink, "k0") == frames
    assert fwd.poll() is None
    a = lab.stop_forwarder(fwd)["bindings"][0]
    assert a["rx_packets"] == a["tx_packets"] == 1000
    assert a["mirror_sampled"] == a["mirror_pushed"] + a["mirror_dropped_ring_full"] == 1000
    log = (tmp_path / "fwd.log").read_text()
    assert log.count("event=status_write_failed") == 1  # said once, not every 200 ms


def test_tcpdump_on_a_served_interface_sees_nothing_xdp_takes_the_frames_first(lab, tmp_path, capture):
    """What docs/lab.md and operations.md tell operators: capture on the mirror or beyond."""
    fwd = lab.start_forwarder(config(tmp_path, ""))
    on_a0 = capture(lab.fwd, "a0", "a0.pcap")
    on_k0 = capture(lab.sink, "k0", "k0.pcap", extra=("-B", "16384"))
    frames = numbered(100)
    assert lab.transfer(frames, lab.src, "s0", lab.sink, "k0") == frames
    on_a0.stop()
    on_k0.stop()
    lab.stop_forwarder(fwd)
    assert read_pcap(on_a0.path)[1] == []          # forwarded, yet invisible on a0
    seen = read_pcap(on_k0.path)[1]                # visible beyond the forwarder (a capture
    assert seen and set(seen) <= set(frames)       # may drop some of its own on a busy box)
