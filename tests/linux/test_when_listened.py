"""when_listened = true (issue 19): the forwarder copies a session's frames only while
something listens to its output (a packet socket on the TAP, a master above it), told
through the ring header by the daemon; every sampled frame is still accounted for.

    src:s0 <-> a0:fwd:b0 <-> k0:sink        daemon and forwarder in fwd, TAP mirror0
"""
import subprocess
import time

import pytest
from fixtures.frames import eth, ipv4_udp, read_pcap
from test_forward import Lab

pytestmark = pytest.mark.root

SESSION = ('[[session]]\nname = "quiet"\ninput = ["a0"]\nwhen_listened = true\n'
           'output = { type = "tap", name = "mirror0" }\n')


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path).up()
    yield lab
    lab.down()


def frames(first, n):
    return [eth(0x0800, ipv4_udp(i.to_bytes(4, "big") + bytes(20))) for i in range(first, first + n)]


def binding(st):
    return st["forwarders"][0]["bindings"][0] if st["forwarders"] else None


def test_copies_only_while_someone_listens(lab, tmp_path, capture):
    from fixtures.daemon import DaemonProc

    d = DaemonProc(tmp_path, SESSION, netns=lab.fwd).start()
    lab.procs.append(d.proc)
    try:
        fwd = lab.start_forwarder(d.cfg)
        d.wait_for(lambda st: st["forwarders"] and st["forwarders"][0].get("registered"), what="rings registered")

        # 1. nobody listens: every sampled frame is skipped, nothing enters the ring
        batch = frames(0, 200)
        assert lab.transfer(batch, lab.src, "s0", lab.sink, "k0") == batch
        st = d.wait_for(lambda st: binding(st) and binding(st)["mirror_sampled"] == 200, what="200 sampled")
        b = binding(st)
        assert b["mirror_skipped_no_listener"] == 200 and b["mirror_pushed"] == 0
        assert st["sessions"][0]["listened"] is False and st["sessions"][0]["when_listened"] is True
        ring = next(r for r in st["rings"] if r["name"].startswith("a0"))
        assert ring["pushed_packets"] == ring["consumed_packets"] == 0, ring

        # 2. tcpdump attached: the next frames are copied and captured
        t0 = time.monotonic()
        # a large capture buffer, as the other lab tests: on a busy machine tcpdump must not
        # lose what the TAP got
        cap = capture(lab.fwd, "mirror0", "on.pcap", extra=("-B", "32768"))
        st = d.wait_for(lambda st: st["sessions"][0]["listened"], what="tcpdump seen as a listener")
        seen_after = time.monotonic() - t0  # reported, not asserted (includes tcpdump's own start)
        batch = frames(200, 100)
        assert lab.transfer(batch, lab.src, "s0", lab.sink, "k0") == batch
        d.wait_for(lambda st: st["sessions"][0]["counters"]["mirrored_packets"] == 100, what="100 copies")
        cap.stop()
        _, got = read_pcap(cap.path)
        assert [g.hex() for g in got] == [f.hex() for f in batch]

        # 3. tcpdump gone: skipping resumes
        d.wait_for(lambda st: st["sessions"][0]["listened"] is False, what="listener gone")
        batch = frames(300, 100)
        assert lab.transfer(batch, lab.src, "s0", lab.sink, "k0") == batch
        st = d.wait_for(lambda st: binding(st)["mirror_sampled"] == 400, what="400 sampled")
        b = binding(st)
        assert (b["mirror_pushed"], b["mirror_skipped_no_listener"]) == (100, 300)

        # 4. a TAP enslaved to a bridge counts as listened (the frames go on from there)
        subprocess.run(["ip", "-n", lab.fwd, "link", "add", "mqbr0", "type", "bridge"], check=True)
        subprocess.run(["ip", "-n", lab.fwd, "link", "set", "mirror0", "master", "mqbr0"], check=True)
        d.wait_for(lambda st: st["sessions"][0]["listened"], what="bridge seen as a listener")
        batch = frames(400, 50)
        assert lab.transfer(batch, lab.src, "s0", lab.sink, "k0") == batch
        st = d.wait_for(lambda st: st["sessions"][0]["counters"]["mirrored_packets"] == 150, what="150 copies")
        st = d.wait_for(lambda st: binding(st)["mirror_sampled"] == 450, what="450 sampled")

        # 5. out of the bridge: nobody again; an ingress/clsact qdisc (where tc programs
        # hang) counts as listened
        subprocess.run(["ip", "-n", lab.fwd, "link", "set", "mirror0", "nomaster"], check=True)
        d.wait_for(lambda st: st["sessions"][0]["listened"] is False, what="bridge left")
        subprocess.run(["tc", "-n", lab.fwd, "qdisc", "add", "dev", "mirror0", "clsact"], check=True)
        d.wait_for(lambda st: st["sessions"][0]["listened"], what="clsact seen as a listener")
        fst = lab.stop_forwarder(fwd)
    finally:
        d.stop()
    b = fst["bindings"][0]
    # every sampled frame is accounted for, the skipped ones included
    assert b["mirror_sampled"] == 450
    assert b["mirror_sampled"] == (b["mirror_pushed"] + b["mirror_dropped_ring_full"] + b["mirror_dropped_no_ring"]
                                   + b["mirror_dropped_ring_lost"] + b["mirror_skipped_no_listener"])
    assert (b["mirror_pushed"], b["mirror_skipped_no_listener"]) == (150, 300)
    rule = b["sessions"][0]
    assert (rule["sampled"], rule["pushed"], rule["skipped_no_listener"]) == (450, 150, 300)
    print(f"tcpdump seen as a listener {seen_after * 1000:.0f} ms after it was started")


def test_tun_output_when_listened(lab, tmp_path, capture):
    """The same for a TUN output (L3): skipped while nobody listens, copied (IP only) once
    tcpdump listens on it."""
    from fixtures.daemon import DaemonProc

    d = DaemonProc(tmp_path, SESSION.replace('type = "tap", name = "mirror0"', 'type = "tun", name = "mtun0"'),
                   netns=lab.fwd).start()
    lab.procs.append(d.proc)
    try:
        fwd = lab.start_forwarder(d.cfg)
        d.wait_for(lambda st: st["forwarders"] and st["forwarders"][0].get("registered"), what="rings registered")
        batch = frames(0, 50)
        assert lab.transfer(batch, lab.src, "s0", lab.sink, "k0") == batch
        st = d.wait_for(lambda st: binding(st) and binding(st)["mirror_sampled"] == 50, what="50 sampled")
        assert binding(st)["mirror_skipped_no_listener"] == 50
        cap = capture(lab.fwd, "mtun0", "tun.pcap", extra=("-B", "32768"))
        d.wait_for(lambda st: st["sessions"][0]["listened"], what="tcpdump on the TUN seen")
        batch = frames(50, 50)
        assert lab.transfer(batch, lab.src, "s0", lab.sink, "k0") == batch
        d.wait_for(lambda st: st["sessions"][0]["counters"]["mirrored_packets"] == 50, what="50 copies")
        cap.stop()
        fst = lab.stop_forwarder(fwd)
    finally:
        d.stop()
    _, got = read_pcap(cap.path)
    assert [g.hex() for g in got] == [f[14:].hex() for f in batch]  # L3: the Ethernet header stripped
    b = fst["bindings"][0]
    assert (b["mirror_sampled"], b["mirror_pushed"], b["mirror_skipped_no_listener"]) == (100, 50, 50)
