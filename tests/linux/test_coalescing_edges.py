"""Wake coalescing at its edges (issue 19, an outside tester's cases): pushes at the idle
threshold, idle rings, a stopped daemon.  Counts are asserted, never absolute timings."""
import random
import signal
import time

import pytest
from fixtures.sessions import S1, sid
from test_coalescing import frame

from mirrord.daemon.poll import IDLE_NS
from mirrord.ring import Producer

pytestmark = pytest.mark.root


def test_pushes_around_the_idle_threshold_all_arrive(daemon, netns):
    """Single records, each pushed about when the ring leaves the poll set to sleep (IDLE_NS
    after the last): every one is delivered, none waits for housekeeping's rescue."""
    d = daemon("max_delay_us = 1000\n" + S1)
    s1 = sid(S1, "s1")
    rnd = random.Random(19)
    n = 60
    with Producer(d.run_dir / "edge-q0.ring", data_size=1 << 16) as p:
        d.wait_for(lambda st: len(st["rings"]) == 1, what="ring attached")
        for i in range(n):
            assert p.push(frame(i), session_id=s1, ts_ns=time.time_ns())
            time.sleep(rnd.uniform(0.9, 1.1) * IDLE_NS / 1e9)
        st = d.wait_for(lambda st: st["sessions"][0]["counters"]["mirrored_packets"] == n, what="all")
    assert st["rings"][0]["pushed_packets"] == st["rings"][0]["consumed_packets"] == n


def test_idle_rings_are_not_polled(daemon, netns):
    """Every ring idle and asleep: the shared timer stops.  Housekeeping's once-a-second look
    at each ring (for lost wake-ups) must not put the empty ones back into the poll set,
    where they would be polled for another IDLE_NS each second, forever."""
    d = daemon("max_delay_us = 1000\n" + S1)
    s1 = sid(S1, "s1")
    ps = [Producer(d.run_dir / f"idle{i}-q0.ring", data_size=1 << 16) for i in range(20)]
    try:
        d.wait_for(lambda st: len(st["rings"]) == 20, what="rings attached")
        for p in ps:
            assert p.push(frame(1), session_id=s1, ts_ns=time.time_ns())
        d.wait_for(lambda st: st["sessions"][0]["counters"]["mirrored_packets"] == 20, what="copies")
        st = d.wait_for(lambda st: st["coalescing"]["polled_rings"] == 0, what="every ring asleep")
        before = st["coalescing"]
        time.sleep(3.5)  # three housekeeping rounds
        after = d.status()["coalescing"]
        assert after["ticks"] == before["ticks"] and after["sleeps"] == before["sleeps"], (before, after)
        # and asleep means woken by the producer: a push still arrives
        assert ps[0].push(frame(2), session_id=s1, ts_ns=time.time_ns())
        d.wait_for(lambda st: st["sessions"][0]["counters"]["mirrored_packets"] == 21, what="the push after")
    finally:
        for p in ps:
            p.close()


def test_stopped_daemon_resumes_polling(daemon, netns):
    """SIGSTOP while rings are polled, pushes meanwhile, SIGCONT: the timerfd fires late,
    every record arrives."""
    d = daemon("max_delay_us = 5000\n" + S1)
    s1 = sid(S1, "s1")
    with Producer(d.run_dir / "stop-q0.ring", data_size=1 << 20) as p:
        d.wait_for(lambda st: len(st["rings"]) == 1, what="ring attached")
        for i in range(10):
            assert p.push(frame(i), session_id=s1, ts_ns=time.time_ns())
        d.wait_for(lambda st: st["rings"][0]["polled"], what="ring polled")
        d.proc.send_signal(signal.SIGSTOP)
        try:
            for i in range(10, 200):
                assert p.push(frame(i), session_id=s1, ts_ns=time.time_ns())
                time.sleep(0.002)
        finally:
            d.proc.send_signal(signal.SIGCONT)
        st = d.wait_for(lambda st: st["sessions"][0]["counters"]["mirrored_packets"] == 200, what="all")
    assert st["sessions"][0]["latency"]["samples"] == 200


def test_hostile_stamps_do_not_poison_the_delay_histogram(daemon, netns):
    """ts_ns is from shared memory: a stamp from the future, 0, 1 and 2**64-1.  0 is not
    counted; the others land in buckets; the sum stays finite and non-negative, and
    /metrics is a well-formed Prometheus histogram (cumulative le, +Inf == _count)."""
    d = daemon("max_delay_us = 1000\n" + S1)
    s1 = sid(S1, "s1")
    now = time.time_ns()
    stamps = [now + 10**12, 0, 1, 2**64 - 1, now, now + 1]
    with Producer(d.run_dir / "ts-q0.ring", data_size=1 << 16) as p:
        d.wait_for(lambda st: len(st["rings"]) == 1, what="ring attached")
        for i, t in enumerate(stamps):
            assert p.push(frame(i), session_id=s1, ts_ns=t)
        st = d.wait_for(lambda st: st["sessions"][0]["counters"]["mirrored_packets"] == len(stamps), what="all")
    s = st["sessions"][0]
    assert s["latency"]["samples"] == len(stamps) - 1  # 0: not stamped
    assert sum(s["latency_buckets"]) == len(stamps) - 1
    assert 0 <= s["latency_sum_ns"] <= (len(stamps) - 1) * 60 * 10**9
    m = d.metrics()
    lab = ("session", "s1")
    buckets = sorted(((float(dict(k[1])["le"]), v) for k, v in m.items()
                      if k[0] == "mirrord_ring_to_output_delay_seconds_bucket" and lab in k[1]))
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and buckets[-1][0] == float("inf")
    assert buckets[-1][1] == m[("mirrord_ring_to_output_delay_seconds_count", (lab,))] == len(stamps) - 1
    assert m[("mirrord_ring_to_output_delay_seconds_sum", (lab,))] >= 0
