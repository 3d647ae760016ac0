"""A ring header names any process and fd, and a daemon run as root takes that fd.

When a ring is found by the scan (not registered with its descriptors), the daemon fetches
the producer's eventfd with pidfd_getfd(header.producer_pid, header.producer_eventfd).
Both numbers are whatever the file says; the file need only be owned by root, the daemon's
uid or an allowed_uids entry.  Run as root (the lab, docs/lab.md, `mirrord run` outside
the unit), the daemon then takes an eventfd out of *any* process, here one run by
`nobody` that has nothing to do with mirrord, and reads it on every wake-up: the victim's
own wake-ups are eaten (its counter is reset to 0), and the ring stays attached as long as
the victim lives.  Expected: an eventfd only from the process that registered it (the
SO_PEERCRED pid of `register`), or the header's pid checked against the file's owner.
"""
import subprocess
import sys
import time

import pytest
from fixtures.daemon import DaemonProc
from mirrord.ring import Producer

pytestmark = pytest.mark.root
SESSION = '[[session]]\nname = "s"\ninput = ["in0"]\noutput = { type = "tap", name = "m0" }\n'

VICTIM = r"""
import os, sys
efd = os.eventfd(0, os.EFD_NONBLOCK)
os.eventfd_write(efd, 5)
print(os.getpid(), efd, flush=True)
sys.stdin.readline()
try:
    print(os.eventfd_read(efd), flush=True)
except BlockingIOError:
    print("EAGAIN", flush=True)
"""


@pytest.fixture
def ns(netns):
    """The shared netns fixture (tests/fixtures/netns.py) under this file's name for it."""
    return netns


def test_a_planted_header_makes_the_root_daemon_steal_another_users_eventfd(tmp_path, ns):
    victim = subprocess.Popen(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
                               sys.executable, "-c", VICTIM], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, cwd="/")
    d = None
    try:
        vpid, vfd = map(int, victim.stdout.readline().split())
        tpl = Producer(tmp_path / "tpl.ring", data_size=1 << 16)
        image = bytearray((tmp_path / "tpl.ring").read_bytes())
        tpl.close()
        image[28:32] = vpid.to_bytes(4, "little")
        image[32:36] = vfd.to_bytes(4, "little", signed=True)
        d = DaemonProc(tmp_path, SESSION, netns=ns).start()
        (d.run_dir / "planted.ring").write_bytes(bytes(image))  # owned by root: accepted
        deadline = time.monotonic() + 5
        rings = []
        while time.monotonic() < deadline and not rings:
            rings = [r for r in d.status()["rings"] if r["name"] == "planted.ring"]
            time.sleep(0.2)
        time.sleep(0.5)
        victim.stdin.write("\n")
        victim.stdin.flush()
        seen = victim.stdout.readline().strip()
        victim.wait(5)
        log = d.log.read_text()
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
        if d is not None:
            d.stop()
    print(rings, seen, [line for line in log.splitlines() if "planted" in line])
    assert not (rings and rings[0]["eventfd"]), (
        f"the daemon attached planted.ring with the eventfd of pid {vpid} (uid nobody, not a producer); "
        f"the victim then read its own eventfd: {seen} (it had written 5)")


PIPER = r"""
import os, sys
r, w = os.pipe()
print(os.getpid(), r, flush=True)
sys.stdin.readline()
"""


def test_a_header_naming_a_same_uid_pipe_gets_no_eventfd_and_a_real_producer_keeps_its_own(tmp_path, ns):
    """The owner check passes (root's file, root's process), the fd fetched is a pipe: refused
    as not an eventfd, the ring is polled.  The real producer beside it (this test, root, the
    file's owner) still has its eventfd taken: wake-ups work for the rings they are meant for."""
    piper = subprocess.Popen([sys.executable, "-c", PIPER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    d = None
    real = None
    try:
        ppid, pfd = map(int, piper.stdout.readline().split())
        tpl = Producer(tmp_path / "tpl.ring", data_size=1 << 16)
        image = bytearray((tmp_path / "tpl.ring").read_bytes())
        tpl.close()
        image[28:32] = ppid.to_bytes(4, "little")
        image[32:36] = pfd.to_bytes(4, "little", signed=True)
        d = DaemonProc(tmp_path, SESSION, netns=ns).start()
        (d.run_dir / "planted.ring").write_bytes(bytes(image))
        real = Producer(d.run_dir / "real.ring", data_size=1 << 16)
        deadline = time.monotonic() + 5
        rings = {}
        while time.monotonic() < deadline and len(rings) < 2:
            rings = {r["name"]: r for r in d.status()["rings"]}
            time.sleep(0.2)
        log = d.log.read_text()
    finally:
        piper.stdin.close()
        piper.wait(5)
        if real is not None:
            real.close()
        if d is not None:
            d.stop()
    assert set(rings) == {"planted.ring", "real.ring"}, rings
    assert rings["planted.ring"]["eventfd"] is False and rings["real.ring"]["eventfd"] is True, rings
    assert "event=ring_no_eventfd ring=planted.ring" in log and "is not an eventfd" in log, log[-1500:]
