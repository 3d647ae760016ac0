"""A session's capture filter in the AF_XDP lab (issue 16): exact counts with filter + rate,
a filter that does not compile refused by reload while the old one keeps running, and hot
reloads of the filter under traffic that cost no forwarded frame.

The lab is test_forward.py's: three namespaces of random names, a0 <-> b0 forwarded by
`mirrord forward`, the daemon in the forwarder's namespace mirroring to a TAP there.
"""
import subprocess
import sys
import threading
import time

import pytest
from fixtures.daemon import DaemonProc
from fixtures.frames import eth, ipv4_udp, read_pcap
from test_forward import lab  # noqa: F401 - the fixture

pytestmark = pytest.mark.root

SESSION = """
[[session]]
name = "dns"
input = ["a0"]
rate = {rate}
filter = "{filter}"
output = {{ type = "tap", name = "mirror0" }}
"""


def frames(n: int, dns_every: int) -> list[bytes]:
    """n numbered UDP frames; every ``dns_every``-th goes to port 53, the others to 5000."""
    return [eth(0x0800, ipv4_udp(i.to_bytes(4, "big") + bytes(40), dport=53 if i % dns_every == 0 else 5000))
            for i in range(n)]


def binding(st: dict) -> dict:
    f = st["forwarders"]
    return next(b for b in f[0]["bindings"] if b["ingress"] == "a0") if f else {}


def start(lab, tmp_path, rate: int, flt: str) -> tuple[DaemonProc, subprocess.Popen]:  # noqa: F811
    d = DaemonProc(tmp_path, SESSION.format(rate=rate, filter=flt), netns=lab.fwd).start()
    lab.procs.append(d.proc)
    subprocess.run(["ip", "-n", lab.fwd, "link", "set", "mirror0", "up"], check=True)
    return d, lab.start_forwarder(d.cfg)


def test_filter_then_rate_counts_add_up_exactly_everywhere(lab, tmp_path, capture):  # noqa: F811
    """5000 frames, 1000 of them port 53, filter "udp port 53" and rate 10: 100 copies on the
    TAP (the 1st, 11th, 21st... DNS frame) and 100 in every counter; seen = filtered +
    not_sampled + sampled and sampled = pushed + dropped by reason, exactly."""
    d, fwd = start(lab, tmp_path, 10, "udp port 53")
    try:
        cap = capture(lab.fwd, "mirror0", extra=("-Q", "in"))
        sent = frames(5000, 5)
        assert lab.transfer(sent, lab.src, "s0", lab.sink, "k0", timeout=30) == sent
        st = d.wait_for(lambda st: binding(st).get("rx_packets") == 5000
                        and st["sessions"][0]["counters"]["mirrored_packets"] == 100,
                        what="5000 frames seen and 100 copies delivered")
        m = d.metrics()
        out = subprocess.run([sys.executable, "-m", "mirrord", "status", "--socket", str(d.sock)],
                             capture_output=True, text=True, check=True, timeout=30).stdout
        cc = subprocess.run([sys.executable, "-m", "mirrord", "check-config", str(d.cfg)],
                            capture_output=True, text=True, timeout=30)
        cap.stop()
        final = lab.stop_forwarder(fwd)["bindings"][0]
    finally:
        d.stop()
    dns = [f for i, f in enumerate(sent) if i % 5 == 0]
    assert read_pcap(cap.path)[1] == dns[::10]  # the 1st of every 10 matching frames, whole
    b = binding(st)
    assert b["filter"] == "udp port 53"
    not_sampled = 1000 - 100  # matching frames the rate passed over
    for c in (b, final):
        assert (c["rx_packets"], c["tx_packets"]) == (5000, 5000)
        assert (c["mirror_filtered"], c["mirror_sampled"], c["mirror_pushed"]) == (4000, 100, 100)
        assert c["rx_packets"] == c["mirror_filtered"] + not_sampled + c["mirror_sampled"]
        assert c["mirror_sampled"] == c["mirror_pushed"] + c["mirror_dropped_ring_full"] \
            + c["mirror_dropped_no_ring"] + c["mirror_dropped_ring_lost"]
    s = st["sessions"][0]
    assert s["filter"] == "udp port 53"
    assert s["counters"]["mirrored_packets"] == 100
    assert sum(v for k, v in s["counters"].items() if k.startswith("dropped_")) == 0
    a0 = (("interface", "a0"), ("queue", "0"))
    assert m[("mirrord_forwarder_mirror_filtered_packets_total", a0)] == 4000
    assert m[("mirrord_forwarder_mirror_sampled_packets_total", a0)] == 100
    assert m[("mirrord_forwarder_mirror_pushed_packets_total", a0)] == 100
    assert m[("mirrord_forwarder_rx_packets_total", a0)] == 5000
    assert m[("mirrord_mirrored_packets_total", (("session", "dns"),))] == 100
    # mirrord status: the session's filter, and the binding's filtered count beside sampled
    assert 'dns: filter "udp port 53"' in out.splitlines(), out
    head = next(ln.split() for ln in out.splitlines() if ln.startswith("forwarder binding"))
    row = next(ln.split() for ln in out.splitlines() if ln.startswith("a0->b0 q0"))
    col = dict(zip(head[2:], row[2:]))  # "forwarder binding" is two words, "a0->b0 q0" too
    assert (col["rx"], col["filtered"], col["sampled"], col["pushed"]) == ("5000", "4000", "100", "100"), out
    assert cc.returncode == 0 and "    filter: 'udp port 53' (" in cc.stdout, cc


def test_a_filter_that_does_not_compile_is_refused_by_reload_and_the_old_one_keeps_running(
        lab, tmp_path, capture):  # noqa: F811
    d, fwd = start(lab, tmp_path, 1, "udp port 53")
    try:
        gen = d.status()["generation"]
        cap = capture(lab.fwd, "mirror0", extra=("-Q", "in"))
        sent = frames(600, 3)
        assert lab.transfer(sent, lab.src, "s0", lab.sink, "k0") == sent
        d.cfg.write_text(d.cfg.read_text().replace('"udp port 53"', '"port 5x"'))
        r = d.request({"op": "reload"})
        assert r == {"ok": False, "error": f'{d.cfg}: session "dns": filter "port 5x": unknown port \'5x\''}, r
        time.sleep(1.0)  # four polls of the forwarder: nothing may change there
        st = d.status()
        assert st["generation"] == gen and st["last_reload_ok"] is False
        assert st["sessions"][0]["filter"] == "udp port 53"
        assert binding(st)["filter"] == "udp port 53" and st["forwarders"][0]["generation"] == gen
        # frames keep flowing, and mirroring under the old filter
        assert lab.transfer(sent, lab.src, "s0", lab.sink, "k0") == sent
        d.wait_for(lambda st: st["sessions"][0]["counters"]["mirrored_packets"] == 400,
                   what="400 copies delivered")
        cap.stop()
        a = lab.stop_forwarder(fwd)["bindings"][0]
    finally:
        d.stop()
    dns = [f for i, f in enumerate(sent) if i % 3 == 0]
    assert read_pcap(cap.path)[1] == dns + dns
    assert (a["rx_packets"], a["tx_packets"], a["mirror_filtered"], a["mirror_sampled"]) == (1200, 1200, 800, 400)


def test_hot_reload_of_the_filter_under_traffic_loses_no_forwarded_frame(lab, tmp_path):  # noqa: F811
    """Reload the filter back and forth while 120000 frames stream through: every frame arrives
    at the far side, in order and unchanged, and every frame is accounted for: filtered or
    sampled (rate 1), and every sampled one pushed or dropped by a reason."""
    d, fwd = start(lab, tmp_path, 1, "udp port 53")
    sent = frames(120000, 2)
    got: list[bytes] = []
    t = threading.Thread(target=lambda: got.extend(lab.transfer(sent, lab.src, "s0", lab.sink, "k0",
                                                                timeout=90)))
    applied = []  # (generation, the forwarder's rx_packets when it ran it)
    try:
        t.start()
        flip = ("udp port 53", "udp port 5000", "udp", "not udp")
        deadline = time.monotonic() + 90
        n = 0
        while t.is_alive() and time.monotonic() < deadline and n < 200:
            cur = d.cfg.read_text()
            old = next(f for f in flip if f'filter = "{f}"' in cur)
            d.cfg.write_text(cur.replace(f'filter = "{old}"', f'filter = "{flip[(flip.index(old) + 1) % 4]}"'))
            r = d.request({"op": "reload"})
            assert r.get("ok"), r
            st = d.wait_for(lambda st: st["forwarders"] and st["forwarders"][0]["generation"] == r["generation"],
                            what=f"generation {r['generation']} in the forwarder")
            applied.append((r["generation"], binding(st)["rx_packets"]))
            n += 1
        t.join(120)
        assert not t.is_alive()
        a = lab.stop_forwarder(fwd)["bindings"][0]
    finally:
        d.stop()
        t.join(5)
    print(f"{len(applied)} reloads applied while the frames streamed: {applied}")
    assert len(got) == len(sent) and got == sent
    # the reloads happened under traffic: several took effect between the first and last frame
    assert sum(0 < rx < len(sent) for _, rx in applied) >= 5, applied
    assert (a["rx_packets"], a["tx_packets"], a["dropped_tx_full"], a["dropped_tx_down"]) == (120000,) * 2 + (0, 0)
    assert a["rx_packets"] == a["mirror_filtered"] + a["mirror_sampled"]  # rate 1: nothing unsampled
    assert a["mirror_sampled"] == a["mirror_pushed"] + a["mirror_dropped_ring_full"] \
        + a["mirror_dropped_no_ring"] + a["mirror_dropped_ring_lost"]
    assert 0 < a["mirror_filtered"] < 120000 and 0 < a["mirror_sampled"] < 120000
