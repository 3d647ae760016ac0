"""Frames at and just above the ring's largest record (9216 bytes) at MTU 9300.

Invariant 3: mirrored bytes are the original frame up to 9216 bytes; invariant 2: every
copy accounted (sampled = pushed + dropped by reason).  Forwarding must not depend on it.
"""
import subprocess

import pytest
from fixtures.frames import eth, ipv4_udp
from test_forward import SESSION, Lab, config  # noqa: F401

pytestmark = pytest.mark.root


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path).up()
    for ns, dev in ((lab.src, "s0"), (lab.fwd, "a0"), (lab.fwd, "b0"), (lab.sink, "k0")):
        subprocess.run(["ip", "-n", ns, "link", "set", dev, "mtu", "9300"], check=True)
    yield lab
    lab.down()


def frame(n: int, i: int) -> bytes:
    return eth(0x0800, ipv4_udp(i.to_bytes(4, "big") + bytes(n - 14 - 28 - 4)))


def test_frames_of_9216_9217_9218_bytes(lab, tmp_path):
    cfg = config(tmp_path, SESSION.format(rate=1, run=0, mpl=0))
    fwd = lab.start_forwarder(cfg)
    sizes = [9215, 9216, 9217, 9218, 9300 + 14]
    frames = [frame(n, i) for i, n in enumerate(sizes)]
    got = lab.transfer(frames, lab.src, "s0", lab.sink, "k0", timeout=5)
    st = lab.stop_forwarder(fwd)
    a = st["bindings"][0]
    print({k: v for k, v in a.items() if k.startswith(("mirror", "rx", "tx", "drop", "xdp"))})
    print("forwarded sizes:", [len(f) for f in got])
    assert [len(f) for f in got] == sizes, "forwarding lost or changed frames"
    dropped = sum(v for k, v in a.items() if k.startswith("mirror_dropped"))
    assert a["mirror_sampled"] == a["mirror_pushed"] + dropped, a
    assert a["mirror_sampled"] == len(sizes), a
