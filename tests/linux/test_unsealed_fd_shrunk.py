"""Held up: an unsealed ring passed by descriptor, then shrunk by its sender under traffic.

The sender registers a named-file ring by fd (no path, so no runtime-dir check), pushes,
and truncates it to 0 while the daemon drains.  Expected (ring-abi.md section 12): no
SIGBUS, `event=ring_lost`, the ring detached and never re-attached, the daemon serving.
"""
import os

import pytest
from fixtures.daemon import DaemonProc
from mirrord.protocol import ControlClient
from mirrord.ring import Producer

pytestmark = pytest.mark.root
SESSION = '[[session]]\nname = "s"\ninput = ["in0"]\noutput = { type = "tap", name = "m0" }\n'


@pytest.fixture
def ns(netns):
    """The shared netns fixture (tests/fixtures/netns.py) under this file's name for it."""
    return netns


def test_sender_truncates_its_registered_unsealed_ring(tmp_path, ns):
    import zlib
    sid = zlib.crc32(b"s") or 1
    d = DaemonProc(tmp_path, SESSION, netns=ns).start()
    try:
        p = Producer(tmp_path / "mine.ring", data_size=1 << 20)
        with ControlClient(d.sock) as c:
            r = c.request({"op": "register", "name": "mine"}, fds=[p.fd, p.eventfd])
        assert r["ok"], r
        pushed = 0
        for i in range(2000):
            pushed += p.push(bytes(64) + i.to_bytes(4, "big"), session_id=sid)
            if i == 1000:
                os.truncate(tmp_path / "mine.ring", 0)
        log = d.wait_log("event=ring_lost", timeout=5)
        st = d.status()
        # registering it again is refused
        with ControlClient(d.sock) as c:
            again = c.request({"op": "register", "name": "mine"}, fds=[p.fd, p.eventfd])
        assert d.proc.poll() is None
        print(pushed, p.lost, [x for x in log.splitlines() if "ring_lost" in x], st["ring_errors"], again)
        p.close()
    finally:
        d.stop()
    assert not st["rings"] and not again["ok"]
    assert d.proc.returncode == 0
