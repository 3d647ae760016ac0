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
import time
import uuid

import pytest
from daemon_proc import DaemonProc
from mirrord.control import ControlClient
from mirrord.ring import Producer

pytestmark = pytest.mark.root
SESSION = '[[session]]\nname = "s"\ninput = ["in0"]\noutput = { type = "tap", name = "m0" }\n'
N = 4096


@pytest.fixture
def ns():
    name = f"mra-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name], check=False)


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
