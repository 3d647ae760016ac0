"""Operating the daemon: /healthz, /readyz and /metrics over real HTTP, and SIGTERM under
traffic.  The daemon runs in the test's namespace and listens on 127.0.0.1 there."""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from fixtures.sessions import S1, TUN, VETH, sid

from mirrord.ring import Consumer, Producer, Routes

pytestmark = pytest.mark.root

HTTP = "127.0.0.1:9469"
IP_FRAME = bytes.fromhex("020000000002020000000001") + b"\x08\x00" + bytes.fromhex(
    "4500001c000100004011f97c0a0000010a000002") + bytes.fromhex("0001000200080000")
ARP_FRAME = bytes.fromhex("ffffffffffff020000000001") + b"\x08\x06" + b"\x00" * 28


def wait_http(d, path, code, timeout=10.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = d.http_get(path)
        if last[0] == code:
            return json.loads(last[1])
        time.sleep(0.05)
    raise AssertionError(f"{path} did not answer {code} within {timeout}s; last: {last}")


def test_readyz_flips_when_the_output_goes_and_comes_back(daemon, make_veth):
    make_veth()
    d = daemon(VETH, http=HTTP)
    body = wait_http(d, "/readyz", 503)
    assert body["reasons"] == [f"no ring attached (runtime_dir {d.run_dir})"]
    code, health = d.http_get("/healthz")
    assert code == 200 and json.loads(health)["status"] == "ok"
    with Producer(d.run_dir / "a.ring", data_size=1 << 20):
        body = wait_http(d, "/readyz", 200)
        assert body["status"] == "ready" and body["sessions"] == {"ids": "ok"} and body["rings"] == 1
        subprocess.run(["ip", "link", "del", "mout0"], check=True)
        body = wait_http(d, "/readyz", 503)
        assert len(body["reasons"]) == 1
        assert body["reasons"][0].startswith('session "ids": output interface mout0: ')
        assert body["sessions"]["ids"] != "ok"
        assert d.http_get("/healthz")[0] == 200  # a missing output is not a reason to restart
        make_veth()
        body = wait_http(d, "/readyz", 200)
        assert body["sessions"] == {"ids": "ok"}
    assert d.http_get("/nope")[0] == 404


def test_metrics_parse_and_equal_the_status_counters(daemon, make_veth):
    make_veth()
    text = S1 + TUN + VETH
    d = daemon(text, http=HTTP)
    s1, l3, ids = sid(text, "s1"), sid(text, "l3"), sid(text, "ids")
    with Producer(d.run_dir / "a.ring", data_size=1 << 16) as p:
        d.wait_for(lambda st: len(st["rings"]) == 1, what="ring attached")
        d.proc.send_signal(signal.SIGSTOP)  # let the 64 KiB ring overflow: ring_full drops
        try:
            pushed = sum(p.push(IP_FRAME, session_id=s1) for _ in range(2000))
        finally:
            d.proc.send_signal(signal.SIGCONT)
        assert 0 < pushed < 2000
        # drained before the next pushes, or they may find the ring still full
        d.wait_for(lambda st: st["rings"][0]["consumed_packets"] == pushed, what="backlog drained")
        for _ in range(30):
            p.push(ARP_FRAME, session_id=l3)    # TUN output: not_ip
            p.push(IP_FRAME, session_id=l3)
            p.push(IP_FRAME, session_id=4242)   # no session claims it: no_session
        subprocess.run(["ip", "link", "del", "mout0"], check=True)
        d.wait_for(lambda st: not next(s for s in st["sessions"] if s["name"] == "ids")["output"]["open"],
                   what="ids output gone")
        for _ in range(7):
            p.push(IP_FRAME, session_id=ids)    # no_output
        st = d.wait_for(lambda st: st["rings"][0]["consumed_packets"] == pushed + 97, what="all consumed")
        m = d.metrics()
        st = d.status()  # quiescent: nothing is pushed any more
    ring = st["rings"][0]["name"]
    by_name = {s["name"]: s for s in st["sessions"]}
    for name, s in by_name.items():
        c = s["counters"]
        lab = (("session", name),)
        assert m[("mirrord_mirrored_packets_total", lab)] == c["mirrored_packets"]
        assert m[("mirrord_mirrored_bytes_total", lab)] == c["mirrored_bytes"]
        assert m[("mirrord_truncated_packets_total", lab)] == c["truncated"]
        for reason in ("no_output", "sink_busy", "sink_error", "not_ip"):
            key = ("mirrord_dropped_packets_total", (("reason", reason), ("session", name)))
            assert m[key] == c[f"dropped_{reason}"], (name, reason)
        up = ("mirrord_output_up", (("output", s["output"]["name"]), ("session", name),
                                    ("type", s["output"]["type"])))
        assert m[up] == int(s["output"]["open"])
    r = st["rings"][0]
    rl = (("ring", ring),)
    assert m[("mirrord_dropped_packets_total", (("reason", "ring_full"), ("ring", ring)))] == r["dropped_ring_full"]
    assert m[("mirrord_dropped_packets_total", (("reason", "no_session"), ("ring", ring)))] == r["dropped_no_session"]
    assert m[("mirrord_ring_pushed_packets_total", rl)] == r["pushed_packets"]
    assert m[("mirrord_ring_consumed_packets_total", rl)] == r["consumed_packets"]
    assert m[("mirrord_ring_corrupt_events_total", rl)] == r["corrupt"] == 0
    assert m[("mirrord_ring_size_bytes", rl)] == r["data_size"]
    assert m[("mirrord_ring_fill_bytes", rl)] == r["fill_bytes"] == 0
    # the counters are the ones this test caused, so the values are known, not just equal
    assert by_name["s1"]["counters"]["mirrored_packets"] == pushed
    assert r["dropped_ring_full"] == 2000 - pushed
    assert by_name["l3"]["counters"]["dropped_not_ip"] == 30
    assert by_name["l3"]["counters"]["mirrored_packets"] == 30
    assert by_name["ids"]["counters"]["dropped_no_output"] == 7
    assert r["dropped_no_session"] == 30
    assert m[("mirrord_rings_attached", ())] == 1
    assert m[("mirrord_sessions", ())] == 3
    assert m[("mirrord_config_generation", ())] == 1
    assert m[("mirrord_last_reload_success", ())] == 1
    assert m[("mirrord_ready", ())] == 0  # the ids output is gone
    assert m[("process_resident_memory_bytes", ())] > 0
    # a refused reload shows up in the gauges; the running config stays
    d.write_config(text + "rate = -1\n")
    assert d.request({"op": "reload"})["ok"] is False
    m = d.metrics()
    assert m[("mirrord_last_reload_success", ())] == 0
    assert m[("mirrord_config_generation", ())] == 1


def test_sigterm_under_traffic_exits_0_and_every_copy_is_accounted_for(daemon, netns, capture):
    # a persistent TAP, so that its kernel counters outlive the daemon
    subprocess.run(["ip", "tuntap", "add", "mirror0", "mode", "tap"], check=True)
    d = daemon(S1, http=HTTP)
    s1 = sid(S1, "s1")
    cap = capture(netns, "mirror0", extra=["-B", "65536"])
    with Producer(d.run_dir / "a.ring", data_size=1 << 22) as p:
        d.wait_for(lambda st: len(st["rings"]) == 1, what="ring attached")
        stop, counts = threading.Event(), {"offered": 0, "pushed": 0}

        def pusher():
            deadline = time.monotonic() + 20  # bounded in time and count
            while not stop.is_set() and counts["offered"] < 2_000_000 and time.monotonic() < deadline:
                for _ in range(50):
                    counts["offered"] += 1
                    counts["pushed"] += p.push(IP_FRAME, session_id=s1)
                time.sleep(0.001)

        t = threading.Thread(target=pusher)
        t.start()
        try:
            d.wait_for(lambda st: st["sessions"][0]["counters"]["mirrored_packets"] > 1000, what="traffic")
            d.proc.send_signal(signal.SIGSTOP)  # a backlog builds up while traffic goes on,
            time.sleep(0.3)                      # so the final drain has real work to do
            t0 = time.monotonic()
            d.proc.send_signal(signal.SIGTERM)
            d.proc.send_signal(signal.SIGCONT)
            rc = d.proc.wait(15)
            took = time.monotonic() - t0
        finally:
            stop.set()
            t.join()
        k = p.counters()
        # what the daemon did not take before it exited is still in the ring, whole
        with Consumer.open(p.path, eventfd=Consumer.NO_EVENTFD) as left:
            leftover = left.drain_routes(Routes([(0, -1, 0)]), 1 << 30)
    cap.stop()
    assert rc == 0
    assert took < 2.0 + 3.0, f"SIGTERM took {took:.1f}s (drain deadline 2s)"
    log = d.log.read_text()
    final = re.search(r"event=session_final session=s1 (.*)", log)
    assert final, log
    c = {k_: int(v) for k_, v in (kv.split("=") for kv in final.group(1).split())}
    # what the daemon consumed went somewhere it counted; nothing was lost between
    assert k.consumed_packets == c["mirrored_packets"] + c["dropped_no_output"] + c["dropped_sink_busy"] \
        + c["dropped_sink_error"] + c["dropped_not_ip"]
    # the outputs stayed open through the final drain
    assert c["dropped_no_output"] == c["dropped_sink_error"] == 0
    # the producer's side: everything offered was pushed (4 MiB never filled)
    assert k.pushed_packets == counts["pushed"] == counts["offered"]
    assert k.pushed_packets - k.consumed_packets == leftover
    # the kernel counted on the TAP exactly what the daemon says it delivered, and what
    # tcpdump kept of it is the original frame (a burst may outrun tcpdump's buffer)
    link = json.loads(subprocess.run(["ip", "-s", "-j", "link", "show", "mirror0"], check=True,
                                     capture_output=True, text=True).stdout)[0]
    assert link["stats64"]["rx"]["packets"] == c["mirrored_packets"]
    from fixtures.frames import read_pcap
    _, frames = read_pcap(cap.path)
    assert 1000 < len(frames) <= c["mirrored_packets"]
    assert all(f == IP_FRAME for f in frames)
    assert "event=stopping" in log and "event=stopped" in log
    drained = re.search(r"event=final_drain records=(\d+)", log)
    assert drained and int(drained.group(1)) > 0, "the final drain had nothing to do"


def test_http_address_in_use_is_a_clear_startup_error(daemon, tmp_path):
    daemon("", http=HTTP)
    other = tmp_path / "second"
    other.mkdir()
    cfg = other / "mirrord.toml"
    cfg.write_text(f'[daemon]\nruntime_dir = "{other / "run"}"\nhttp = "{HTTP}"\n')
    r = subprocess.run([sys.executable, "-m", "mirrord", "run", "-c", str(cfg)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == f'mirrord: [daemon] http "{HTTP}": Address already in use'
    assert not (other / "run" / "control.sock").exists()  # nothing left behind


def test_daemon_keeps_no_second_thread(daemon, make_veth):
    """A second thread, even an idle one, makes every write(2) of the drain take a file
    reference (the file table is shared): about 3 % of the 1514-byte TAP rate.  Outputs
    are brought up in a passing thread and the HTTP sockets are bound without uvloop's
    resolver pool, so once outputs are open the daemon is one thread again."""
    make_veth()
    d = daemon(S1 + TUN + VETH, http="localhost:9469")  # a name: resolved, not a literal
    with Producer(d.run_dir / "a.ring", data_size=1 << 16):
        wait_http(d, "/readyz", 200)
        assert d.http_get("/metrics")[0] == 200
        assert d.request({"op": "reload"})["ok"]
        subprocess.run(["ip", "link", "del", "mout0"], check=True)  # reopened when it returns
        make_veth()
        wait_http(d, "/readyz", 200)
        deadline = time.monotonic() + 5  # a passing thread may still be exiting
        while True:
            threads = os.listdir(f"/proc/{d.proc.pid}/task")
            if len(threads) == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        names = [open(f"/proc/{d.proc.pid}/task/{t}/comm").read().strip() for t in threads]
        assert threads == [str(d.proc.pid)], f"daemon threads: {names}"
