"""when_listened at its edges (issue 19, an outside tester's cases): listeners that are not a
packet socket on the output itself, an output that goes away while listened, XDP on the
TAP, and a tcpdump that comes and goes while frames flow.

    src:s0 <-> a0:fwd:b0 <-> k0:sink        daemon and forwarder in fwd, TAP mirror0
"""
import random
import shutil
import signal
import subprocess
import time

import pytest
from fixtures.frames import read_pcap
from test_when_listened import SESSION, binding, frames, lab  # noqa: F401  (lab: the fixture)

pytestmark = pytest.mark.root


def ip(ns, *args):
    subprocess.run(["ip", "-n", ns, *args], check=True)


def start(lab, tmp_path):
    from fixtures.daemon import DaemonProc

    d = DaemonProc(tmp_path, SESSION, netns=lab.fwd).start()
    lab.procs.append(d.proc)
    fwd = lab.start_forwarder(d.cfg)
    d.wait_for(lambda st: st["forwarders"] and st["forwarders"][0].get("registered"), what="rings registered")
    d.wait_for(lambda st: st["sessions"][0]["output"]["open"], what="mirror0 open")
    return d, fwd


def exact(b):
    """The forwarder's identity, per binding and per rule."""
    assert b["mirror_sampled"] == (b["mirror_pushed"] + b["mirror_dropped_ring_full"] + b["mirror_dropped_no_ring"]
                                   + b["mirror_dropped_ring_lost"] + b["mirror_skipped_no_listener"]), b
    for r in b["sessions"]:
        assert r["sampled"] == r["pushed"] + r["dropped_ring_full"] + r["dropped_no_ring"] + \
            r.get("dropped_ring_lost", 0) + r["skipped_no_listener"], r


def test_tcpdump_on_a_macvlan_of_the_tap_listens(lab, tmp_path, capture):
    """A device stacked on the TAP (a macvlan in passthru mode here; a VLAN sub-interface, a
    macvtap to an IDS VM are the same) receives what the TAP receives: tcpdump on it is a
    listener of the TAP, though its packet socket is bound to another ifindex and the TAP
    has no master."""
    d, fwd = start(lab, tmp_path)
    try:
        ip(lab.fwd, "link", "add", "link", "mirror0", "name", "mq0up", "type", "macvlan", "mode", "passthru")
        ip(lab.fwd, "link", "set", "mq0up", "addrgenmode", "none", "up")
        cap = capture(lab.fwd, "mq0up", "upper.pcap", extra=("-B", "32768"))
        d.wait_for(lambda st: st["sessions"][0]["listened"], timeout=5, what="tcpdump on mq0up seen")
        batch = frames(0, 20)
        assert lab.transfer(batch, lab.src, "s0", lab.sink, "k0") == batch
        d.wait_for(lambda st: st["sessions"][0]["counters"]["mirrored_packets"] == 20, what="20 copies")
        cap.stop()
        _, got = read_pcap(cap.path)
        assert [g for g in got if g in batch] == batch  # the macvlan got what the TAP got
        fst = lab.stop_forwarder(fwd)
    finally:
        d.stop()
    exact(fst["bindings"][0])


@pytest.mark.skipif(shutil.which("clang") is None, reason="clang builds the XDP program")
@pytest.mark.parametrize("mode", ["xdpgeneric", "xdpdrv"])
def test_xdp_on_the_tap_listens(lab, tmp_path, mode):
    src = tmp_path / "pass.c"
    src.write_text('#include <linux/bpf.h>\n'
                   '__attribute__((section("xdp"), used)) int pass(struct xdp_md *c) { return XDP_PASS; }\n'
                   '__attribute__((section("license"), used)) char lic[] = "GPL";\n')
    obj = tmp_path / "pass.o"
    subprocess.run(["clang", "-O2", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c", str(src),
                    "-o", str(obj)], check=True)
    d, fwd = start(lab, tmp_path)
    try:
        assert d.status()["sessions"][0]["listened"] is False
        ip(lab.fwd, "link", "set", "dev", "mirror0", mode, "obj", str(obj), "sec", "xdp")
        d.wait_for(lambda st: st["sessions"][0]["listened"], what="XDP on mirror0 seen as a listener")
        batch = frames(0, 30)
        assert lab.transfer(batch, lab.src, "s0", lab.sink, "k0") == batch
        d.wait_for(lambda st: st["sessions"][0]["counters"]["mirrored_packets"] == 30, what="30 copies")
        ip(lab.fwd, "link", "set", "dev", "mirror0", mode, "off")
        d.wait_for(lambda st: st["sessions"][0]["listened"] is False, what="XDP detached: nobody again")
        assert lab.transfer(batch, lab.src, "s0", lab.sink, "k0") == batch
        fst = lab.stop_forwarder(fwd)
    finally:
        d.stop()
    b = fst["bindings"][0]
    exact(b)
    assert (b["mirror_sampled"], b["mirror_pushed"], b["mirror_skipped_no_listener"]) == (60, 30, 30)


def test_output_deleted_while_listened_is_no_longer_listened(lab, tmp_path, capture):
    """tcpdump -i any listens to every device; mirror0 deleted: until the daemon makes it
    again (its retry, 5 s later), the session has no output, so nobody listens to it and
    its frames must be skipped, not copied to be dropped as no_output.  (With tcpdump on
    mirror0 itself, it dies with the device and the outcome depended on which the daemon
    saw first.)"""
    d, fwd = start(lab, tmp_path)
    try:
        capture(lab.fwd, "any", "any.pcap")
        d.wait_for(lambda st: st["sessions"][0]["listened"], what="tcpdump -i any seen")
        ip(lab.fwd, "link", "del", "mirror0")
        d.wait_for(lambda st: not st["sessions"][0]["output"]["open"] and st["sessions"][0]["listened"] is False,
                   timeout=4, what="a deleted output no longer listened")
        d.wait_for(lambda st: st["sessions"][0]["output"]["open"], timeout=30, what="output made again")
        d.wait_for(lambda st: st["sessions"][0]["listened"], what="tcpdump -i any listens to it again")
        fst = lab.stop_forwarder(fwd)
    finally:
        d.stop()
    exact(fst["bindings"][0])


def test_tcpdump_flapping_keeps_the_accounting_exact(lab, tmp_path):
    """tcpdump started and killed at random moments while frames flow: every sampled frame
    is pushed or skipped (per binding and per rule), and the daemon accounts for every push."""
    d, fwd = start(lab, tmp_path)
    rnd = random.Random(19)
    procs = []
    try:
        sent = 20  # the first frames with nobody listening: skipped for sure
        assert lab.transfer(frames(0, sent), lab.src, "s0", lab.sink, "k0") == frames(0, sent)
        for k in range(8):
            t = subprocess.Popen(["ip", "netns", "exec", lab.fwd, "tcpdump", "-i", "mirror0", "-n", "-w", "/dev/null"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(t)
            time.sleep(rnd.uniform(0.0, 0.12))
            batch = frames(sent, 40)
            killer = None
            if k % 2:
                import threading
                killer = threading.Timer(rnd.uniform(0.0, 0.1), t.send_signal, (signal.SIGKILL,))
                killer.start()
            assert lab.transfer(batch, lab.src, "s0", lab.sink, "k0") == batch
            sent += len(batch)
            if killer:
                killer.join()
            t.kill()
            t.wait(10)
        # and the last ones with tcpdump seen listening: pushed for sure
        t = subprocess.Popen(["ip", "netns", "exec", lab.fwd, "tcpdump", "-i", "mirror0", "-n", "-w", "/dev/null"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(t)
        d.wait_for(lambda st: st["sessions"][0]["listened"], what="tcpdump seen")
        assert lab.transfer(frames(sent, 20), lab.src, "s0", lab.sink, "k0") == frames(sent, 20)
        sent += 20
        st = d.wait_for(lambda st: binding(st)["mirror_sampled"] == sent, what="all sampled")
        # every push consumed, read while the forwarder runs: its ring file goes with it, and
        # the daemon then detaches the ring (after draining it) and drops it from status
        st = d.wait_for(lambda st: [r["consumed_packets"] for r in st["rings"] if r["name"].startswith("a0")]
                        == [binding(st)["mirror_pushed"]], what="every push consumed")
        fst = lab.stop_forwarder(fwd)
        b = fst["bindings"][0]
        exact(b)
        assert b["mirror_pushed"] > 0 and b["mirror_skipped_no_listener"] > 0, b  # both happened
        assert b["mirror_pushed"] == binding(st)["mirror_pushed"]  # nothing pushed after the last frames
        c = st["sessions"][0]["counters"]
        assert c["mirrored_packets"] + c["dropped_no_output"] + c["dropped_sink_busy"] + c["dropped_sink_error"] \
            == b["mirror_pushed"], c
    finally:
        for t in procs:
            if t.poll() is None:
                t.kill()
                t.wait()
        d.stop()
