"""`register` has no cap on how many rings a client may attach, and a ring registered by
descriptor stays attached as long as the pid its *own header* names is alive.

The daemon guards every mapping that is not a shrink-sealed memfd in a fixed table of 4096
slots (ring-abi.md section 12).  One allowed client that registers 4096 small unsealed
files by descriptor (no path: any regular file is taken, from anywhere) fills the table;
from then on the reference forwarder's real rings (named files, always guarded) are
refused with "the table of guarded rings is full": nothing of theirs is mirrored again
until the daemon restarts.  Nothing detaches the flood: the header's producer_pid is the
client's (here: this test's) and the client need not stay connected.
"""
import os
import subprocess
import sys
import time

import pytest
from fixtures.daemon import DaemonProc
from mirrord.protocol import ControlClient
from mirrord.ring import Producer

pytestmark = pytest.mark.root
SESSION = '[[session]]\nname = "s"\ninput = ["in0"]\noutput = { type = "tap", name = "m0" }\n'
N = 4096


@pytest.fixture
def ns(netns):
    """The shared netns fixture (tests/fixtures/netns.py) under this file's name for it."""
    return netns


def cpu_seconds(pid: int) -> float:
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def test_a_register_flood_fills_the_guard_table_and_locks_real_rings_out(tmp_path, ns):
    d = DaemonProc(tmp_path, SESSION, netns=ns).start()
    flood = tmp_path / "flood"
    flood.mkdir()
    legit = None
    try:
        tpl = Producer(tmp_path / "tpl.ring", data_size=1 << 16)
        image = (tmp_path / "tpl.ring").read_bytes()  # header names this process as producer
        tpl.close()
        accepted = 0
        t0 = time.monotonic()
        with ControlClient(d.sock, timeout=10) as c:
            for i in range(N):
                p = flood / f"{i}.ring"
                p.write_bytes(image)
                fd = os.open(p, os.O_RDWR)
                efd = os.eventfd(0)
                try:
                    r = c.request({"op": "register", "name": f"flood{i}"}, fds=[fd, efd])
                finally:
                    os.close(fd)
                    os.close(efd)
                    p.unlink()  # the daemon keeps it mapped; nothing left on disk
                accepted += bool(r.get("ok"))
        took = time.monotonic() - t0
        st = d.status()
        pid = d.proc.pid
        c0 = cpu_seconds(pid)
        time.sleep(3)
        idle_cpu = (cpu_seconds(pid) - c0) / 3
        rss = int(next(line for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS")).split()[1])
        print(f"{accepted}/{N} flood rings accepted from one client in {took:.1f}s; daemon now has "
              f"{len(st['rings'])} rings, idle CPU {idle_cpu:.0%}, VmRSS {rss // 1024} MiB")
        # the forwarder's ring: a named file in the runtime directory, found by the scan
        legit = Producer(d.run_dir / "a0-q0.ring", data_size=1 << 16)
        legit.push(b"\x02" * 64, session_id=1)
        deadline = time.monotonic() + 5
        names = []
        while time.monotonic() < deadline:
            names = [r["name"] for r in d.status()["rings"]]
            if "a0-q0.ring" in names:
                break
            time.sleep(0.2)
        errors = d.status().get("ring_errors", {})
    finally:
        if legit is not None:
            legit.close()
        d.stop()
    assert "a0-q0.ring" in names, (f"after {accepted} registrations by one client, the forwarder's ring is "
                                   f"refused: {errors}")


FLOODER = r"""
import os, sys
from mirrord.protocol import ControlClient
image = open(sys.argv[2], "rb").read()
replies = []
with ControlClient(sys.argv[1], timeout=10) as c:
    for i in range(int(sys.argv[4])):
        fd = os.memfd_create(f"flood{i}")  # unsealed, header naming the test process
        os.write(fd, image)
        r = c.request({"op": "register", "name": f"flood{i}"}, fds=[fd])
        os.close(fd)
        replies.append(r.get("error") or "ok")
print("\n".join(replies), flush=True)
print("done", flush=True)
sys.stdin.readline()
"""


def test_a_flood_is_capped_by_max_rings_and_detached_when_its_sender_exits(tmp_path, ns):
    """max_rings caps the rings passed by descriptor alone (one line in the reply and the log),
    the rings found in the runtime directory keep their own budget, and a ring registered by
    descriptor lives as long as the process that registered it, whatever pid its header names
    (here the test's own, alive throughout)."""
    d = DaemonProc(tmp_path, "max_rings = 10\n" + SESSION, netns=ns).start()
    legit = []
    try:
        tpl = Producer(tmp_path / "tpl.ring", data_size=1 << 16)
        (tmp_path / "image").write_bytes((tmp_path / "tpl.ring").read_bytes())
        tpl.close()
        child = subprocess.Popen([sys.executable, "-c", FLOODER, str(d.sock), str(tmp_path / "image"), "-", "30"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            replies = [child.stdout.readline().strip() for _ in range(30)]
            assert child.stdout.readline().strip() == "done"
            st = d.status()
            flood = [r for r in st["rings"] if r["name"].startswith("fd:flood")]
            # the runtime directory's budget is untouched by the flood
            legit = [Producer(d.run_dir / f"a{i}-q0.ring", data_size=1 << 16) for i in range(3)]
            deadline = time.monotonic() + 5
            names = []
            while time.monotonic() < deadline and len(names) < 3:
                names = [r["name"] for r in d.status()["rings"] if r["name"].endswith("-q0.ring")]
                time.sleep(0.2)
            child.stdin.write("\n")
            child.stdin.flush()
            child.wait(10)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        deadline = time.monotonic() + 5
        left = flood
        while time.monotonic() < deadline and left:
            left = [r for r in d.status()["rings"] if r["name"].startswith("fd:flood")]
            time.sleep(0.2)
        kept = sorted(r["name"] for r in d.status()["rings"])
        log = d.log.read_text()
    finally:
        for p in legit:
            p.close()
        d.stop()
    assert replies[:10] == ["ok"] * 10, replies
    assert all(r.endswith("10 rings passed by descriptor alone are attached, [daemon] max_rings is 10: refused")
               for r in replies[10:]), replies[10:]
    assert log.count("event=max_rings_reached") == 1, log[-2000:]
    assert len(flood) == 10 and {r["registered_by"] for r in flood} == {child.pid}, flood
    assert {r["producer_pid"] for r in flood} == {os.getpid()}  # what the header says: alive all along
    assert sorted(names) == ["a0-q0.ring", "a1-q0.ring", "a2-q0.ring"], names
    assert left == [], f"the flood outlived its sender: {left}"
    assert kept == ["a0-q0.ring", "a1-q0.ring", "a2-q0.ring"], kept
