"""VLAN sub-interface inputs in the lab (issue 17): one ingress (a0) carrying untagged
frames, 802.1Q VID 100 and 200, and QinQ (outer 0x88a8 over inner 0x8100); sessions for
``a0.100`` and ``a0``, each with its own mirror TAP.  Each TAP holds exactly its frames,
byte for byte with their tags (tcpdump), rates count per (binding, session) exactly, and a
reload from one mapping to another under traffic costs no forwarded frame.

    src:s0 <-> a0:fwd:b0 <-> k0:sink        (a0.100 is no device: NAME.N is parent + VID)
"""
import math
import subprocess
import threading

import pytest
from fixtures.frames import eth, ipv4_udp, read_pcap
from test_forward import Lab

pytestmark = pytest.mark.root


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path).up()
    yield lab
    lab.down()


def session(name, inp, out, rate=1):
    return f'[[session]]\nname = "{name}"\ninput = {inp}\nrate = {rate}\noutput = {{ type = "tap", name = "{out}" }}\n'


KINDS = [(), ((0x8100, 100),), ((0x8100, 200),), ((0x88A8, 100), (0x8100, 7)), ((0x88A8, 300), (0x8100, 100))]


def mix(n):
    """Frame i: kind i % 5 (untagged, VID 100, VID 200, QinQ S-VID 100, QinQ S-VID 300 over
    C-VID 100), its number in the payload."""
    return [eth(0x0800, ipv4_udp(i.to_bytes(4, "big") + bytes(20)), tags=KINDS[i % 5]) for i in range(n)]


def outer_vid(f):
    return int.from_bytes(f[14:16], "big") & 0xFFF if f[12:14] in (b"\x81\x00", b"\x88\xa8") else 0


@pytest.mark.parametrize("rates", [(1, 1), (3, 2)])
def test_each_tap_gets_exactly_its_frames(lab, tmp_path, capture, rates):
    from fixtures.daemon import DaemonProc

    r_sub, r_par = rates
    d = DaemonProc(tmp_path, session("sub", '["a0.100"]', "mirror1", r_sub) +
                   session("parent", '[{ interface = "a0" }]', "mirror0", r_par), netns=lab.fwd).start()
    lab.procs.append(d.proc)
    try:
        for tap in ("mirror0", "mirror1"):
            subprocess.run(["ip", "-n", lab.fwd, "link", "set", tap, "up"], check=True)
        # a large capture buffer: on a busy machine tcpdump must not lose what the TAP got
        cap0 = capture(lab.fwd, "mirror0", "m0.pcap", extra=("-B", "32768"))
        cap1 = capture(lab.fwd, "mirror1", "m1.pcap", extra=("-B", "32768"))
        fwd = lab.start_forwarder(d.cfg)
        frames = mix(1000)
        assert lab.transfer(frames, lab.src, "s0", lab.sink, "k0") == frames  # forwarded, tags intact
        sub_in = [f for f in frames if outer_vid(f) == 100]
        par_in = [f for f in frames if outer_vid(f) != 100]
        want_sub, want_par = sub_in[::r_sub], par_in[::r_par]
        n_sub, n_par = math.ceil(len(sub_in) / r_sub), math.ceil(len(par_in) / r_par)
        assert (len(want_sub), len(want_par)) == (n_sub, n_par)
        d.wait_for(lambda st: {s["name"]: s["counters"]["mirrored_packets"] for s in st["sessions"]}
                   == {"sub": n_sub, "parent": n_par}, what="copies delivered")
        st = d.wait_for(lambda st: st["forwarders"] and st["forwarders"][0]["bindings"][0]["mirror_sampled"]
                        == n_sub + n_par, what="forwarder status caught up")
        m = d.metrics()
        cap0.stop()
        cap1.stop()
        fst = lab.stop_forwarder(fwd)
    finally:
        d.stop()
    _, got0 = read_pcap(cap0.path)
    _, got1 = read_pcap(cap1.path)
    assert [g.hex() for g in got1] == [w.hex() for w in want_sub]  # VID 100, 802.1Q and QinQ S-tag
    assert [g.hex() for g in got0] == [w.hex() for w in want_par]  # untagged, VID 200, S-VID 300
    assert {s["name"]: s["counters"]["mirrored_bytes"] for s in st["sessions"]} == {
        "sub": sum(map(len, want_sub)), "parent": sum(map(len, want_par))}
    # per (binding, session), exact: in the forwarder's status, the daemon's view and /metrics
    a0 = fst["bindings"][0]
    rules = {r["input"]: r for r in a0["sessions"]}
    assert set(rules) == {"a0", "a0.100"}
    assert (rules["a0.100"]["session"], rules["a0.100"]["vlan"], rules["a0.100"]["seen"],
            rules["a0.100"]["sampled"], rules["a0.100"]["pushed"]) == ("sub", 100, 400, n_sub, n_sub)
    assert (rules["a0"]["session"], rules["a0"]["vlan"], rules["a0"]["seen"],
            rules["a0"]["sampled"], rules["a0"]["pushed"]) == ("parent", 0, 600, n_par, n_par)
    assert a0["mirror_sampled"] == n_sub + n_par and a0["rx_packets"] == 1000
    assert {r["input"]: r["sampled"] for r in st["forwarders"][0]["bindings"][0]["sessions"]} == {
        "a0": n_par, "a0.100": n_sub}
    lv = lambda inp, sess: (("input", inp), ("interface", "a0"), ("queue", "0"), ("session", sess))  # noqa: E731
    assert m[("mirrord_forwarder_session_sampled_packets_total", lv("a0.100", "sub"))] == n_sub
    assert m[("mirrord_forwarder_session_sampled_packets_total", lv("a0", "parent"))] == n_par


def test_reload_from_one_mapping_to_another_loses_no_forwarded_frame(lab, tmp_path):
    from fixtures.daemon import DaemonProc

    one = session("sub", '["a0.100"]', "mirror1") + session("parent", '["a0"]', "mirror0")
    two = session("sub", '[{ interface = "a0", vlan = 200 }, "a0.300"]', "mirror1") + \
        session("parent", '["a0.100"]', "mirror0", rate=2)
    d = DaemonProc(tmp_path, one, netns=lab.fwd).start()
    lab.procs.append(d.proc)
    try:
        fwd = lab.start_forwarder(d.cfg)
        frames = mix(500) * 40  # 20000 frames while the tables swap back and forth
        done = threading.Event()
        swaps = []

        def reload_loop():
            for i in range(40):
                if done.wait(0.05):
                    break
                d.write_config(two if i % 2 == 0 else one)
                swaps.append(d.request({"op": "reload"}).get("ok"))

        t = threading.Thread(target=reload_loop)
        t.start()
        try:
            got = lab.transfer(frames, lab.src, "s0", lab.sink, "k0", timeout=60)
        finally:
            done.set()
            t.join()
        d.write_config(two)
        assert d.request({"op": "reload"})["ok"]
        gen = d.status()["generation"]
        st = d.wait_for(lambda st: st["forwarders"] and st["forwarders"][0]["generation"] == gen,
                        what="the forwarder follows the last reload")
        fst = lab.stop_forwarder(fwd)
    finally:
        d.stop()
    assert len(got) == len(frames) and got == frames  # every frame forwarded, in order
    assert swaps and all(swaps)
    a0 = fst["bindings"][0]
    assert a0["rx_packets"] == a0["tx_packets"] == len(frames) and a0["dropped_tx_full"] == 0
    assert a0["mirror_sampled"] == a0["mirror_pushed"] + a0["mirror_dropped_ring_full"]
    # the last mapping is in force: VIDs 100 (parent's), 200 and 300 (sub's), no default rule
    assert sorted((r["input"], r["session"], r["vlan"]) for r in a0["sessions"]) == [
        ("a0.100", "parent", 100), ("a0.200", "sub", 200), ("a0.300", "sub", 300)]
    assert st["forwarders"][0]["bindings"][0]["sessions"]
