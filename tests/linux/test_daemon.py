"""The daemon for real: a subprocess in a test namespace, rings in its runtime directory,
outputs that tcpdump captures, the control socket."""
import mmap
import os
import signal
import subprocess
import threading
import time

import pytest
from fixtures.frames import frame_set, read_pcap
from fixtures.sessions import S1, S2, VETH, sid

from mirrord.protocol import ControlClient
from mirrord.ring import HEADER_SIZE, Producer

pytestmark = pytest.mark.root


def test_tap_output_shows_the_frames_and_status_counts_them(daemon, netns, capture):
    d = daemon(S1)
    s1 = sid(S1, "s1")
    frames = frame_set()
    subprocess.run(["ip", "link", "set", "mirror0", "mtu", "9000"], check=True)
    cap = capture(netns, "mirror0")
    with Producer(d.run_dir / "fwd-q0.ring", data_size=1 << 20) as p:
        d.wait_for(lambda st: len(st["rings"]) == 1, what="ring attached")
        for _, f in frames:
            assert p.push(f, session_id=s1)
        assert p.push(b"\x02" * 64, session_id=12345)  # no such session
        st = d.wait_for(lambda st: st["sessions"][0]["counters"]["mirrored_packets"] == len(frames),
                        what="all frames mirrored")
        cap.stop()
    c = st["sessions"][0]["counters"]
    assert c["mirrored_bytes"] == sum(len(f) for _, f in frames)
    assert c["dropped_no_output"] == c["dropped_sink_error"] == 0
    ring = st["rings"][0]
    assert ring["name"] == "fwd-q0.ring" and ring["eventfd"] is True
    assert ring["offered"] == ring["pushed_packets"] == len(frames) + 1
    assert ring["consumed_packets"] == len(frames) + 1
    assert ring["dropped_no_session"] == 1
    _, got = read_pcap(cap.path)
    assert [g.hex() for g in got] == [f.hex() for _, f in frames]
    # `mirrord status` renders the same counters for an operator
    out = subprocess.run(["python3", "-m", "mirrord", "status", "-c", str(d.cfg)],
                         capture_output=True, text=True, check=True).stdout
    row = next(line for line in out.splitlines() if line.startswith("s1 "))
    assert row.split()[:4] == ["s1", "tap:mirror0", "up", str(len(frames))]


def _pusher(p, session_id, stop, counts):
    frame = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + b"p" * 50
    while not stop.is_set():
        for _ in range(50):
            counts["offered"] += 1
            counts["pushed"] += p.push(frame, session_id=session_id)
        time.sleep(0.001)


def test_reload_broken_keeps_running_and_changed_session_loses_nothing(daemon):
    d = daemon(S1 + S2)
    s1 = sid(S1, "s1")
    with Producer(d.run_dir / "a.ring", data_size=1 << 22) as p:
        d.wait_for(lambda st: len(st["rings"]) == 1, what="ring attached")
        stop, counts = threading.Event(), {"offered": 0, "pushed": 0}
        t = threading.Thread(target=_pusher, args=(p, s1, stop, counts))
        t.start()
        try:
            time.sleep(0.3)
            # a broken config is refused with the reason; the running config stays
            d.write_config(S1 + S2.replace('name = "mirror1"', 'name = "mirror0"'))
            r = d.request({"op": "reload"})
            assert r == {"ok": False, "error": f'{d.cfg}: session "s2": key "output.name": '
                                               "'mirror0' is already the output of session \"s1\""}
            st = d.status()
            assert st["generation"] == 1 and st["last_reload_ok"] is False
            assert [s["name"] for s in st["sessions"]] == ["s1", "s2"]
            time.sleep(0.3)
            # a changed session (s2: new rate, new output) applies; s1 keeps flowing
            d.write_config(S1 + S2.replace("mirror1", "mirror2") + "rate = 10\n")
            r = d.request({"op": "reload"})
            assert r == {"ok": True, "generation": 2}
            time.sleep(0.3)
        finally:
            stop.set()
            t.join()
        st = d.wait_for(lambda st: st["rings"][0]["fill_bytes"] == 0, what="ring drained")
    assert counts["pushed"] == counts["offered"] > 1000  # the 4 MiB ring never filled
    s1c = next(s for s in st["sessions"] if s["name"] == "s1")["counters"]
    assert s1c["mirrored_packets"] == counts["pushed"], "s1 lost copies across the reloads"
    s2 = next(s for s in st["sessions"] if s["name"] == "s2")
    assert (s2["rate"], s2["output"]["name"], s2["output"]["open"]) == (10, "mirror2", True)
    assert st["last_reload_ok"] is True
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert "mirror2" in links and "mirror1" not in links  # the old output was closed


def test_output_deleted_counts_no_output_and_resumes_when_back(daemon, netns, make_veth):
    make_veth()
    d = daemon(VETH)
    ids = sid(VETH, "ids")
    frame = bytes.fromhex("020000000002020000000001") + b"\x88\xb5" + b"m" * 50

    def counters():
        return d.session("ids")["counters"]

    with Producer(d.run_dir / "a.ring", data_size=1 << 20) as p:
        d.wait_for(lambda st: len(st["rings"]) == 1, what="ring attached")
        for _ in range(100):
            p.push(frame, session_id=ids)
        d.wait_for(lambda st: st["sessions"][0]["counters"]["mirrored_packets"] == 100, what="delivered")
        subprocess.run(["ip", "link", "del", "mout0"], check=True)
        d.wait_for(lambda st: not st["sessions"][0]["output"]["open"], what="output seen gone")
        for _ in range(100):
            p.push(frame, session_id=ids)
        d.wait_for(lambda st: st["sessions"][0]["counters"]["dropped_no_output"] == 100, what="no_output")
        make_veth()
        d.wait_for(lambda st: st["sessions"][0]["output"]["open"], what="output back")
        for _ in range(100):
            p.push(frame, session_id=ids)
        d.wait_for(lambda st: st["sessions"][0]["counters"]["mirrored_packets"] == 200, what="resumed")
    c = counters()
    assert c["mirrored_packets"] + c["dropped_no_output"] + c["dropped_sink_error"] == 300
    assert c["dropped_sink_error"] == 0


def test_sink_error_is_logged_with_its_errno_and_shown_in_status(daemon, netns, make_veth):
    """A copy larger than the `interface` output's MTU is refused (EMSGSIZE): counted as
    sink_error, logged once with the errno an operator acts on, shown in status.  A later
    error (the output set down: ENETDOWN) replaces the errno in status at once; its count,
    held back by the log's rate limit, is logged at the stop."""
    make_veth()
    d = daemon(VETH)
    ids = sid(VETH, "ids")
    head = bytes.fromhex("020000000002020000000001") + b"\x88\xb5"
    with Producer(d.run_dir / "a.ring", data_size=1 << 20) as p:
        d.wait_for(lambda st: len(st["rings"]) == 1, what="ring attached")
        assert d.session("ids")["last_sink_error"] is None
        d.proc.send_signal(signal.SIGSTOP)  # one drain sees all five: one log line for the three
        try:
            for n in (3000, 100, 3000, 100, 3000):  # the veth's MTU is 1500
                assert p.push(head + b"e" * n, session_id=ids)
        finally:
            d.proc.send_signal(signal.SIGCONT)
        st = d.wait_for(lambda st: st["sessions"][0]["last_sink_error"] is not None, what="errno shown")
    c = st["sessions"][0]["counters"]
    assert (c["mirrored_packets"], c["dropped_sink_error"], c["dropped_sink_busy"]) == (2, 3, 0)
    assert st["sessions"][0]["last_sink_error"] == "EMSGSIZE: Message too long"
    log = d.wait_log("event=sink_error session=ids output=mout0 dropped=3 errno=EMSGSIZE reason='Message too long'")
    assert log.count("event=sink_error") == 1
    out = subprocess.run(["python3", "-m", "mirrord", "status", "-c", str(d.cfg)],
                         capture_output=True, text=True, check=True).stdout
    assert "ids: last sink error: EMSGSIZE: Message too long" in out.splitlines()

    subprocess.run(["ip", "link", "set", "mout0", "down"], check=True)
    with Producer(d.run_dir / "b.ring", data_size=1 << 20) as p:
        # (a.ring, closed and removed by its producer, is let go: ring file removed)
        d.wait_for(lambda st: "b.ring" in [r["name"] for r in st["rings"]], what="second ring attached")
        for _ in range(2):
            assert p.push(head + b"e" * 100, session_id=ids)
        st = d.wait_for(lambda st: st["sessions"][0]["counters"]["dropped_sink_error"] == 5, what="two more")
    assert st["sessions"][0]["last_sink_error"] == "ENETDOWN: Network is down"
    assert d.log.read_text().count("event=sink_error") == 1  # within the rate limit
    d.stop()
    assert d.proc.returncode == 0
    log = d.log.read_text()
    assert "event=sink_error session=ids output=mout0 dropped=2 errno=ENETDOWN reason='Network is down'" in log
    assert log.count("event=sink_error") == 2


_DYING_PRODUCER = """
import mmap, os, sys
from mirrord.ring import Producer
p = Producer(sys.argv[1], data_size=1 << 20)
print("ready", flush=True)
sys.stdin.readline()
with mmap.mmap(p.fd, 4096) as m:
    m[192:196] = bytes(4)  # need_wakeup: no kick, so only the detach drains what follows
head = bytes.fromhex("020000000002020000000001") + b"\\x88\\xb5"
for n in (3000, 100, 3000, 100, 3000):
    assert p.push(head + b"e" * n, session_id=int(sys.argv[2]))
print("pushed", flush=True)
sys.stdin.readline()
"""


def test_dead_producers_ring_is_drained_detached_and_its_sink_errors_keep_their_errno(daemon, netns, make_veth):
    """A producer killed with copies in its ring: within a tick the daemon drains them,
    detaches the ring and says why; the copies its final drain could not send are counted
    and logged with their errno (EMSGSIZE over the veth's MTU)."""
    make_veth()
    d = daemon(VETH)
    prod = subprocess.Popen(["python3", "-c", _DYING_PRODUCER, str(d.run_dir / "a.ring"), str(sid(VETH, "ids"))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert prod.stdout.readline() == "ready\n"
        d.wait_for(lambda st: len(st["rings"]) == 1, what="ring attached")
        d.proc.send_signal(signal.SIGSTOP)
        try:
            prod.stdin.write("\n")
            prod.stdin.flush()
            assert prod.stdout.readline() == "pushed\n"
            prod.kill()
            prod.wait(10)
        finally:
            d.proc.send_signal(signal.SIGCONT)
        st = d.wait_for(lambda st: not st["rings"], what="ring detached")
    finally:
        if prod.poll() is None:
            prod.kill()
            prod.wait(10)
    c = st["sessions"][0]["counters"]
    assert (c["mirrored_packets"], c["dropped_sink_error"]) == (2, 3)
    assert st["sessions"][0]["last_sink_error"] == "EMSGSIZE: Message too long"
    log = d.wait_log("event=sink_error session=ids output=mout0 dropped=3 errno=EMSGSIZE reason='Message too long'")
    assert "event=ring_detached ring=a.ring reason=producer gone" in log


def test_sigkill_and_restart_reattaches_and_every_copy_is_accounted_for(daemon):
    d = daemon(S1)
    s1 = sid(S1, "s1")
    with Producer(d.run_dir / "a.ring", data_size=1 << 16) as p:
        d.wait_for(lambda st: len(st["rings"]) == 1, what="ring attached")
        stop, counts = threading.Event(), {"offered": 0, "pushed": 0}
        t = threading.Thread(target=_pusher, args=(p, s1, stop, counts))
        t.start()
        try:
            time.sleep(0.3)
            mirrored_before = d.session("s1")["counters"]["mirrored_packets"]
            assert d.kill(signal.SIGKILL) == -signal.SIGKILL
            time.sleep(0.5)  # the producer keeps pushing into a ring nobody drains
            offered_while_dead = counts["offered"]
            d.start()
            d.wait_for(lambda st: len(st["rings"]) == 1, what="ring re-attached")
            time.sleep(0.3)
        finally:
            stop.set()
            t.join()
        st = d.wait_for(lambda st: st["rings"][0]["fill_bytes"] == 0, what="ring drained")
        k = p.counters()
    ring = st["rings"][0]
    assert counts["offered"] > offered_while_dead  # the producer never blocked
    assert ring["offered"] == counts["offered"]
    assert ring["pushed_packets"] == counts["pushed"]
    assert ring["dropped_ring_full"] == counts["offered"] - counts["pushed"] > 0  # 64 KiB filled
    assert ring["consumed_packets"] == k.pushed_packets  # every pushed copy was drained
    assert k.attaches == 2
    assert mirrored_before > 0
    # the new daemon counts what it delivered since its start; the ring shows the rest
    assert st["sessions"][0]["counters"]["mirrored_packets"] <= ring["consumed_packets"] - mirrored_before


def test_corrupt_ring_is_logged_with_its_reason_and_delivery_goes_on(daemon):
    """Invariants 4 and 5 at the daemon: a scribbled ring is counted once per event, logged
    with the field and the bound, shown in status, and clean copies after it are delivered
    exactly once."""
    d = daemon(S1)
    s1 = sid(S1, "s1")
    frame = bytes.fromhex("020000000002020000000001") + b"\x88\xb5" + b"c" * 50
    size = 1 << 16

    def mirrored():
        return d.session("s1")["counters"]["mirrored_packets"]

    with Producer(d.run_dir / "a.ring", data_size=size) as p, mmap.mmap(p.fd, HEADER_SIZE + size) as m:
        d.wait_for(lambda st: len(st["rings"]) == 1, what="ring attached")
        for _ in range(10):
            p.push(frame, session_id=s1)
        d.wait_for(lambda st: st["sessions"][0]["counters"]["mirrored_packets"] == 10, what="delivered")
        # 1. the producer index turns unaligned (8 bytes at header offset 64)
        prod = p.counters().prod
        m[64:72] = (prod + 3).to_bytes(8, "little")  # seen at the next housekeeping tick
        log_line = f"event=ring_corrupt ring=a.ring events=1 reason='producer index {prod + 3} is not a multiple of 8'"
        deadline = time.monotonic() + 10
        while log_line not in d.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert log_line in d.log.read_text()
        time.sleep(2.5)  # two housekeeping ticks: the same bad index is not counted again
        ring = d.status()["rings"][0]
        assert ring["corrupt"] == 1
        assert ring["last_corrupt"] == f"producer index {prod + 3} is not a multiple of 8"
        for _ in range(10):  # the producer's next submits republish its index
            p.push(frame, session_id=s1)
        d.wait_for(lambda st: st["sessions"][0]["counters"]["mirrored_packets"] == 20, what="delivered after")
        # 2. a record's cap_len, scribbled while the daemon is stopped and cannot race us
        d.proc.send_signal(signal.SIGSTOP)
        try:
            at = p.counters().prod % size
            for _ in range(5):
                p.push(frame, session_id=s1)
            m[HEADER_SIZE + at + 8:HEADER_SIZE + at + 12] = (70000).to_bytes(4, "little")
        finally:
            d.proc.send_signal(signal.SIGCONT)
        st = d.wait_for(lambda st: st["rings"][0]["corrupt"] == 2, what="second corruption counted")
        reason = f"record at data offset {at}: cap_len 70000 exceeds the ring's max_frame 9216"
        assert st["rings"][0]["last_corrupt"] == reason
        out = subprocess.run(["python3", "-m", "mirrord", "status", "-c", str(d.cfg)],
                             capture_output=True, text=True, check=True).stdout
        assert f"a.ring: last corruption: {reason}" in out.splitlines()
        for _ in range(10):
            p.push(frame, session_id=s1)
        d.wait_for(lambda st: st["sessions"][0]["counters"]["mirrored_packets"] == 30, what="delivered after")
        k = p.counters()
    assert k.corrupt_events == 2
    assert k.corrupt_bytes == 5 * ((40 + len(frame) + 7) // 8 * 8)  # the five records skipped
    time.sleep(0.5)
    assert mirrored() == 30  # nothing went out twice


def test_polled_ring_reattached_with_its_eventfd_loses_and_repeats_nothing(daemon, netns, capture):
    """A ring the scan finds before its producer registers, and whose eventfd the daemon
    cannot fetch, is polled.  When the producer then registers it with its descriptors
    (SCM_RIGHTS), the daemon switches to the eventfd: every copy once, in order."""
    d = daemon(S1)
    s1 = sid(S1, "s1")
    cap = capture(netns, "mirror0", extra=("-B", "65536"))  # room for a burst of 100 (-s 0 slots)

    def frame(i):
        return bytes.fromhex("020000000002020000000001") + b"\x88\xb5" + i.to_bytes(4, "big") + b"r" * 46

    staging = d.tmp / "staging"
    staging.mkdir()
    with Producer(staging / "a.ring", data_size=1 << 20) as p:
        with open(staging / "a.ring", "r+b") as f:  # producer_eventfd (header offset 32): none
            f.seek(32)
            f.write((-1).to_bytes(4, "little", signed=True))
        os.rename(staging / "a.ring", d.run_dir / "a.ring")
        st = d.wait_for(lambda st: len(st["rings"]) == 1, what="ring found by the scan")
        assert st["rings"][0]["eventfd"] is False
        for i in range(100):
            p.push(frame(i), session_id=s1)
        d.wait_for(lambda st: st["sessions"][0]["counters"]["mirrored_packets"] == 100, what="polled delivery")
        d.proc.send_signal(signal.SIGSTOP)  # copies in flight across the switch
        try:
            for i in range(100, 200):
                p.push(frame(i), session_id=s1)
        finally:
            d.proc.send_signal(signal.SIGCONT)
        with ControlClient(d.sock) as c:
            r = c.request({"op": "register", "path": str(d.run_dir / "a.ring")}, fds=[p.fd, p.eventfd])
        assert r == {"ok": True, "ring": "a.ring"}
        st = d.wait_for(lambda st: len(st["rings"]) == 1 and st["rings"][0]["eventfd"], what="eventfd reader")
        for i in range(200, 300):
            p.push(frame(i), session_id=s1)
        st = d.wait_for(lambda st: st["sessions"][0]["counters"]["mirrored_packets"] == 300, what="all delivered")
        cap.stop()
        (d.run_dir / "a.ring").unlink()
    assert "reason=re-attached with the eventfd the producer passed" in d.log.read_text()
    assert st["sessions"][0]["counters"]["mirrored_packets"] == 300
    _, got = read_pcap(cap.path)
    assert [g[14:18] for g in got] == [i.to_bytes(4, "big") for i in range(300)]


def test_sigterm_drains_what_the_ring_holds_and_exits_0(daemon):
    d = daemon(S1)
    s1 = sid(S1, "s1")
    frame = bytes.fromhex("020000000002020000000001") + b"\x08\x00" + b"t" * 50
    with Producer(d.run_dir / "a.ring", data_size=1 << 22) as p:
        d.wait_for(lambda st: len(st["rings"]) == 1, what="ring attached")
        d.proc.send_signal(signal.SIGSTOP)  # copies pile up in the ring
        try:
            n = sum(p.push(frame, session_id=s1) for _ in range(20000))
        finally:
            d.proc.send_signal(signal.SIGCONT)
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(10) == 0
        k = p.counters()
    assert n == 20000 == k.pushed_packets
    assert k.consumed_packets == k.pushed_packets  # drained before exit
    assert "event=rings_closed count=1" in d.log.read_text()


def test_sighup_reloads_and_status_reports_a_refused_reload(daemon):
    d = daemon(S1)
    d.write_config(S1 + S2)
    d.proc.send_signal(signal.SIGHUP)
    st = d.wait_for(lambda st: st["generation"] == 2, what="SIGHUP reload applied")
    assert [s["name"] for s in st["sessions"]] == ["s1", "s2"]
    assert all(s["output"]["open"] for s in st["sessions"])
    d.write_config(S1 + S2 + "rate = -1\n")
    d.proc.send_signal(signal.SIGHUP)
    st = d.wait_for(lambda st: st["last_reload_ok"] is False, what="refused reload reported")
    assert st["generation"] == 2
    assert st["last_reload_error"] == f'{d.cfg}: session "s2": key "rate": must be between 0 and 4294967295, got -1'
    assert d.proc.poll() is None
