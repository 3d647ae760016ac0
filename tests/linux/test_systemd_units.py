"""The shipped units under a real systemd (252 here), installed the way docs/operations.md
says: a wheel built from the tree in a venv at /opt/mirrord, sysusers, tmpfiles, config,
units.  systemd runs as PID 1 of private PID, mount and cgroup namespaces, in a network
namespace of its own (tests/systemd_pid1.py); the lab is two veth pairs in it:

    s0 <-> a0 : mirrord forward (generic XDP) : b0 <-> k0        TAP mirror0 (the daemon's)

The tests share one boot and run in file order (the watchdog, reload and stop tests change
the state the next one starts from).  Test-only drop-in: WatchdogSec=4s and
TimeoutAbortSec=2s on mirrord.service, so the watchdog test waits seconds, not 20.
"""
import json
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from fixtures.frames import eth, ipv4_udp, read_pcap
from fixtures import pktio
from fixtures.pktio import read_frames, write_frames

from fixtures.systemd_pid1 import SystemdPid1, available

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
PKTIO = pktio.__file__
MIRRORD = "/opt/mirrord/bin/mirrord"
CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN = 12, 13, 21

CONFIG = """[daemon]
runtime_dir = "/run/mirrord"
control_socket = "/run/mirrord/control.sock"
http = "127.0.0.1:9469"

[[session]]
name = "span"
input = ["a0"]
rate = {rate}
output = {{ type = "tap", name = "mirror0" }}
"""
WATCHDOG_DROPIN = """[Service]
# test only: the shipped WatchdogSec=10s (plus TimeoutAbortSec= = TimeoutStopSec=10s before
# SIGKILL reaches a stopped process) would make this test wait 20 s
WatchdogSec=4s
TimeoutAbortSec=2s
"""


class Guest:
    def __init__(self, sd: SystemdPid1, netns: str, tmp: Path):
        self.sd, self.netns, self.tmp = sd, netns, tmp

    def status(self) -> dict:
        return json.loads(self.sd.run(MIRRORD, "status", "--json", "--socket", "/run/mirrord/control.sock").stdout)

    def main_pid(self, unit: str) -> int:
        return int(self.sd.show(unit, "MainPID")["MainPID"])

    def proc_status(self, pid: int) -> dict[str, str]:
        text = self.sd.run("cat", f"/proc/{pid}/status").stdout
        return {k: v.strip() for k, v in (line.split(":", 1) for line in text.splitlines())}

    def mirrored(self) -> int:
        return next(s["counters"]["mirrored_packets"] for s in self.status()["sessions"] if s["name"] == "span")

    def sampled(self) -> int:
        fwd = self.status()["forwarders"]
        assert len(fwd) == 1, fwd
        return next(b["mirror_sampled"] for b in fwd[0]["bindings"] if b["ingress"] == "a0")

    def send(self, frames: list[bytes], timeout: float = 15.0) -> list[bytes]:
        """Send frames on s0 (into the forwarder's a0); return what arrived on k0 (past b0)."""
        fin, fout = self.tmp / "in.frames", self.tmp / "out.frames"
        write_frames(fin, frames)
        r = subprocess.Popen(["ip", "netns", "exec", self.netns, sys.executable, PKTIO, "recv", "k0",
                              str(len(frames)), str(timeout), str(fout)], stdout=subprocess.PIPE, text=True)
        try:
            assert r.stdout.readline().strip() == "ready"
            subprocess.run(["ip", "netns", "exec", self.netns, sys.executable, PKTIO, "send", "s0", str(fin)],
                           check=True, timeout=60)
            r.wait(timeout + 10)
        finally:
            if r.poll() is None:
                r.kill()
                r.wait()
        return read_frames(fout)

    def why(self) -> str:
        return "\n".join(f"--- journal {u}\n{self.sd.journal(u)}" for u in ("mirrord", "mirrord-forward"))


def numbered(n: int, base: int = 0) -> list[bytes]:
    return [eth(0x0800, ipv4_udp((base + i).to_bytes(4, "big") + bytes(60))) for i in range(n)]


def _wheels(dest: Path) -> None:
    """The artifact users install: a wheel of this tree, plus its dependencies as wheels
    (the guest's network namespace has no route to an index)."""
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    for args in (["wheel", "--no-deps", "--no-build-isolation", str(ROOT), "-w", str(dest)],
                 ["download", "-d", str(dest), "{wheel}"]):
        args = [a.format(wheel=next(dest.glob("mirrord-*.whl"), "")) for a in args]
        r = subprocess.run([*pip, *args], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"pip {args[0]} failed: {r.stderr.strip()}"


def _install(sd: SystemdPid1) -> None:
    """docs/operations.md, section 1, verbatim but for the paths of the clone and the wheels."""
    src = "/mnt/share/systemd"
    sd.run("python3", "-m", "venv", "/opt/mirrord")
    sd.run("/opt/mirrord/bin/pip", "install", "-q", "--no-index", "--find-links", "/mnt/share/wheels", "mirrord",
           timeout=120)
    sd.run("install", "-m", "0644", f"{src}/mirrord.sysusers", "/usr/lib/sysusers.d/mirrord.conf")
    sd.run("systemd-sysusers")
    sd.run("install", "-m", "0644", f"{src}/mirrord.tmpfiles", "/usr/lib/tmpfiles.d/mirrord.conf")
    sd.run("systemd-tmpfiles", "--create", "mirrord.conf")
    sd.run("install", "-m", "0644", f"{src}/mirrord.service", f"{src}/mirrord-forward.service",
           "/etc/systemd/system/")
    sd.run("install", "-d", "/etc/mirrord")
    sd.write("/etc/mirrord/mirrord.toml", CONFIG.format(rate=1))
    sd.write("/etc/mirrord/forward.env", "MIRRORD_FORWARD_ARGS=--pair a0:b0 --queues 1\n")
    sd.write("/etc/systemd/system/mirrord.service.d/test-watchdog.conf", WATCHDOG_DROPIN)
    sd.run(MIRRORD, "check-config", "/etc/mirrord/mirrord.toml")
    sd.systemctl("daemon-reload")
    sd.systemctl("enable", "--now", "mirrord", "mirrord-forward")


@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    why = available()
    if why:
        pytest.skip(why)
    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump is not installed")
    tmp = tmp_path_factory.mktemp("systemd")
    share = tmp / "share"
    share.mkdir()
    _wheels(share / "wheels")
    shutil.copytree(ROOT / "systemd", share / "systemd")
    netns = f"mrt-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    sd = SystemdPid1(tmp, netns, share)
    try:
        ip = ["ip", "-n", netns]
        subprocess.run([*ip, "link", "set", "lo", "up"], check=True)
        subprocess.run([*ip, "link", "add", "s0", "type", "veth", "peer", "name", "a0"], check=True)
        subprocess.run([*ip, "link", "add", "b0", "type", "veth", "peer", "name", "k0"], check=True)
        for dev in ("s0", "a0", "b0", "k0"):
            subprocess.run([*ip, "link", "set", dev, "mtu", "1500", "addrgenmode", "none", "up"], check=True)
        sd.boot()
        _install(sd)
        yield Guest(sd, netns, tmp)
    finally:
        try:
            sd.shutdown()
        finally:
            subprocess.run(["ip", "netns", "del", netns], check=False)


def test_daemon_is_ready_with_its_status_text(guest):
    sd = guest.sd
    p = sd.show("mirrord", "Type", "ActiveState", "SubState", "StatusText", "NRestarts")
    assert (p["Type"], p["ActiveState"], p["SubState"]) == ("notify", "active", "running"), guest.why()
    # READY=1 came (start returned), and STATUS= is the daemon's summary; it shows the
    # forwarder's ring once the daemon attached it
    # (the forwarder makes a ring per binding: a0-q0 and b0-q0)
    st = sd.wait_for(lambda: re.fullmatch(r"1 sessions, outputs open 1/1, 2 rings; mirrored \d+, dropped 0 at "
                                          r"outputs, 0 ring_full", sd.show("mirrord", "StatusText")["StatusText"]),
                     what="STATUS= with the forwarder's rings")
    assert st
    f = sd.show("mirrord-forward", "ActiveState", "NRestarts")
    assert f == {"ActiveState": "active", "NRestarts": "0"}, guest.why()


def test_ownership_of_the_runtime_directory(guest):
    """One model: tmpfiles makes /run/mirrord mirrord:mirrord 0770; the daemon's files are
    mirrord:mirrord 0660, the forwarder's root:mirrord 0660; no start changes any of it."""
    sd = guest.sd
    out = sd.run("stat", "-c", "%n %U:%G %a", "/run/mirrord", "/run/mirrord/control.sock",
                 "/run/mirrord/a0-q0.ring", "/run/mirrord/b0-q0.ring").stdout.split("\n")
    assert out[:4] == ["/run/mirrord mirrord:mirrord 770", "/run/mirrord/control.sock mirrord:mirrord 660",
                       "/run/mirrord/a0-q0.ring root:mirrord 660", "/run/mirrord/b0-q0.ring root:mirrord 660"], out


def _caps(st: dict[str, str]) -> dict[str, int]:
    return {k: int(st[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}


def test_daemon_runs_as_mirrord_with_only_its_capabilities_and_creates_its_tap(guest):
    sd = guest.sd
    uid = int(sd.run("id", "-u", "mirrord").stdout)
    gid = int(sd.run("id", "-g", "mirrord").stdout)
    st = guest.proc_status(guest.main_pid("mirrord"))
    assert st["Uid"].split() == [str(uid)] * 4 and st["Gid"].split() == [str(gid)] * 4 and uid != 0
    want = 1 << CAP_NET_ADMIN | 1 << CAP_NET_RAW
    assert _caps(st) == {"CapInh": want, "CapPrm": want, "CapEff": want, "CapBnd": want, "CapAmb": want}
    assert st["NoNewPrivs"] == "1"
    # LimitNOFILE=65536, or the manager's own hard limit where that is lower (this host: 20000)
    limits = sd.run("cat", f"/proc/{guest.main_pid('mirrord')}/limits").stdout
    cap = int(re.search(r"Max open files\s+\d+\s+(\d+)", Path(f"/proc/{sd.pid}/limits").read_text()).group(1))
    assert re.search(r"Max open files\s+(\d+)\s+(\d+)", limits).groups() == (str(min(65536, cap)),) * 2, limits
    link = subprocess.run(["ip", "-n", guest.netns, "-d", "link", "show", "mirror0"], capture_output=True,
                          text=True, check=True).stdout
    assert "tun type tap" in link, link


def test_forwarder_runs_in_group_mirrord_without_cap_sys_admin(guest):
    st = guest.proc_status(guest.main_pid("mirrord-forward"))
    gid = int(guest.sd.run("id", "-g", "mirrord").stdout)
    assert st["Uid"].split() == ["0"] * 4 and st["Gid"].split() == [str(gid)] * 4
    caps = _caps(st)
    assert not caps["CapBnd"] & (1 << CAP_SYS_ADMIN), hex(caps["CapBnd"])
    assert caps["CapEff"] == caps["CapBnd"] and st["NoNewPrivs"] == "1"
    link = subprocess.run(["ip", "-n", guest.netns, "link", "show", "a0"], capture_output=True, text=True,
                          check=True).stdout
    assert "xdpgeneric" in link, link


def test_frames_through_the_forwarder_appear_on_the_tap(guest, capture):
    cap = capture(guest.netns, "mirror0", extra=("-B", "16384"))
    before = guest.mirrored()
    frames = numbered(50)
    got = guest.send(frames)
    assert got == frames, guest.why()                    # forwarded, byte for byte
    guest.sd.wait_for(lambda: guest.mirrored() == before + 50, what="50 copies delivered to the TAP")
    # tcpdump -U writes each frame as it reads it: wait for the file, not for a fixed time
    try:
        guest.sd.wait_for(lambda: len([f for f in read_pcap(cap.path)[1] if f in frames]) >= len(frames),
                          what="50 frames in the capture", timeout=10)
    except AssertionError:
        pass  # a capture on a busy machine may drop some of its own: tcpdump counts them
    cap.stop()
    captured = [f for f in read_pcap(cap.path)[1] if f in frames]
    tail = cap.proc.stderr.read()
    dropped = int(re.search(r"(\d+) packets? dropped by kernel", tail).group(1))
    assert captured and captured == [f for f in frames if f in captured], guest.why()  # intact, in order
    assert len(captured) + dropped >= len(frames), (len(captured), tail)


def test_watchdog_restarts_a_stopped_daemon_and_the_forwarder_registers_again(guest):
    sd = guest.sd
    before = sd.show("mirrord", "MainPID", "NRestarts")
    sd.run("kill", "-STOP", before["MainPID"])
    def restarted():
        p = sd.show("mirrord", "MainPID", "NRestarts", "ActiveState", "SubState")
        return p if (p["NRestarts"] != before["NRestarts"] and (p["ActiveState"], p["SubState"]) == ("active", "running")
                     and p["MainPID"] not in ("0", before["MainPID"])) else None

    after = sd.wait_for(restarted, what="the watchdog's restart", timeout=30)
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
    assert "Watchdog timeout" in sd.run("journalctl", "--no-pager", "-u", "mirrord").stdout
    # the new daemon cannot take the forwarder's eventfd itself (no ptrace, no pidfd_getfd):
    # it has it only if the forwarder registered again over control.sock
    rings = sd.wait_for(lambda: (r := guest.status()["rings"]) and all(x["eventfd"] for x in r) and r,
                        what="the rings re-attached with their eventfds", timeout=15)
    assert sorted(r["name"] for r in rings) == ["a0-q0.ring", "b0-q0.ring"], rings
    assert "via=scm_rights" in sd.journal("mirrord", 20), guest.why()
    assert sd.show("mirrord-forward", "NRestarts")["NRestarts"] == "0"


def test_a_restarted_forwarder_is_found_by_the_daemon(guest):
    sd = guest.sd
    old = guest.main_pid("mirrord-forward")
    sd.systemctl("restart", "mirrord-forward")
    new = guest.main_pid("mirrord-forward")
    assert new not in (0, old)
    rings = sd.wait_for(lambda: (r := guest.status()["rings"]) and all(x["producer_pid"] == new and x["eventfd"]
                                                                       for x in r) and r,
                        what="the new forwarder's rings attached with their eventfds", timeout=15)
    assert sorted(r["name"] for r in rings) == ["a0-q0.ring", "b0-q0.ring"], rings
    out = sd.run("stat", "-c", "%n %U:%G %a", "/run/mirrord", "/run/mirrord/control.sock").stdout.split("\n")
    assert out[:2] == ["/run/mirrord mirrord:mirrord 770", "/run/mirrord/control.sock mirrord:mirrord 660"], out


def test_reload_that_changes_rate_changes_the_forwarders_sampling(guest):
    sd = guest.sd
    s0 = guest.sampled()
    assert guest.send(numbered(20, 100)) == numbered(20, 100)
    s1 = sd.wait_for(lambda: (s := guest.sampled()) == s0 + 20 and s, what="20 sampled at rate 1")
    sd.write("/etc/mirrord/mirrord.toml", CONFIG.format(rate=10))
    gen = guest.status()["generation"]
    sd.systemctl("reload", "mirrord")
    assert guest.status()["generation"] == gen + 1, guest.why()
    # within a second the forwarder follows the daemon's accepted config: one generation
    st = sd.wait_for(lambda: (s := guest.status())["forwarders"][0]["generation"] == s["generation"] and s,
                     what="the forwarder at the daemon's generation", timeout=10)
    assert st["generation"] == gen + 1
    assert guest.send(numbered(20, 200)) == numbered(20, 200)
    s2 = sd.wait_for(lambda: (s := guest.sampled()) > s1 and s, what="sampled after the reload")
    assert s2 - s1 == 2, f"20 frames at rate 10 sampled {s2 - s1} times"
    # a reload the daemon refuses is in force nowhere: both stay at rate 10, one generation
    sd.write("/etc/mirrord/mirrord.toml", CONFIG.format(rate=-1))
    sd.systemctl("reload", "mirrord")
    st = guest.status()
    assert st["last_reload_ok"] is False and st["generation"] == gen + 1, st["last_reload_error"]
    assert guest.send(numbered(20, 300)) == numbered(20, 300)
    s3 = sd.wait_for(lambda: (s := guest.sampled()) > s2 and s, what="sampled after the refused reload")
    assert s3 - s2 == 2, f"20 frames sampled {s3 - s2} times after a refused reload"
    assert guest.status()["forwarders"][0]["generation"] == gen + 1


def test_stop_exits_0_for_both(guest):
    sd = guest.sd
    sd.systemctl("stop", "mirrord-forward", "mirrord")
    for unit in ("mirrord-forward", "mirrord"):
        p = sd.show(unit, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
        assert p == {"ActiveState": "inactive", "Result": "success", "ExecMainCode": "1", "ExecMainStatus": "0"}, \
            (unit, p, guest.why())
    link = subprocess.run(["ip", "-n", guest.netns, "link", "show", "a0"], capture_output=True, text=True,
                          check=True).stdout
    assert "xdp" not in link, link                       # the forwarder detached its program
