"""Property tests: random pushes and drains against a model queue.

Whatever the sequence (wrap-around, full ring, jumbo and oversize frames), the producer's
accounting is exact (pushed + dropped == offered) and the consumer gets exactly the
pushed frames, byte-identical and in order.
"""
from collections import deque

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirrord.ring import Consumer, Producer

SIZE = 1 << 16  # the smallest ring: wraps and fills often
MAX_FRAME = 9216

frame_len = st.one_of(
    st.integers(1, 128),            # runts and small frames
    st.integers(60, 1514),          # ethernet
    st.integers(8000, 12000),       # jumbo, some beyond max_frame (truncated)
)
op = st.one_of(
    st.tuples(st.just("push"), st.lists(frame_len, min_size=1, max_size=40)),
    st.tuples(st.just("drain"), st.integers(1, 64)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, min_size=1, max_size=60), data=st.data())
def test_random_push_drain_conserves_and_delivers_in_order(ops, data):
    with Producer(data_size=SIZE, max_frame=MAX_FRAME) as p, Consumer(p.fd) as c:
        model: deque[tuple[int, bytes, int]] = deque()
        offered = dropped = 0
        for kind, arg in ops:
            if kind == "push":
                for n in arg:
                    frame = data.draw(st.binary(min_size=n, max_size=n)) if n < 64 else \
                        bytes((offered + i) & 0xFF for i in range(n))
                    ok = p.push(frame, ifindex=offered % 7, session_id=2)
                    if ok:
                        model.append((offered, frame[:MAX_FRAME], len(frame)))
                    else:
                        dropped += 1
                    offered += 1
            else:
                for rec in c.records(budget=arg):
                    seq, frame, wire = model.popleft()
                    assert rec.seq == seq
                    assert rec.data == frame
                    assert rec.wire_len == wire
                    assert rec.truncated == (wire > MAX_FRAME)
                    assert rec.ifindex == seq % 7 and rec.session_id == 2
        # drain the rest
        rest = list(c.records())
        assert [(r.seq, r.data) for r in rest] == [(s, f) for s, f, _ in model]
        k = p.counters()
        assert k.pushed_packets + k.dropped_ring_full_packets == offered
        assert k.dropped_ring_full_packets == dropped
        assert k.consumed_packets == k.pushed_packets
        assert k.corrupt_events == 0
        assert k.fill_bytes == 0


def test_full_ring_drops_and_counts_bytes():
    with Producer(data_size=SIZE, max_frame=2048) as p, Consumer(p.fd) as c:
        frame = bytes(range(256)) * 4  # 1024 bytes -> 1064-byte records
        results = [p.push(frame) for _ in range(100)]
        fits = SIZE // 1064
        assert results[:fits] == [True] * fits
        assert not any(results[fits:])
        k = p.counters()
        assert k.pushed_packets == fits
        assert k.dropped_ring_full_packets == 100 - fits
        assert k.dropped_ring_full_bytes == (100 - fits) * 1024
        # room again after a drain: the producer never needed the consumer to be alive
        assert len(list(c.records())) == fits
        assert p.push(frame)


def test_jumbo_frames_fit_and_oversize_is_truncated():
    with Producer(data_size=1 << 20) as p, Consumer(p.fd) as c:
        jumbo = bytes(i & 0xFF for i in range(9216))
        big = bytes(i & 0xFF for i in range(9600))
        assert p.push(jumbo)
        assert p.push(big)
        a, b = list(c.records())
        assert a.data == jumbo and not a.truncated and a.wire_len == 9216
        assert b.data == big[:9216] and b.truncated and b.wire_len == 9600
        assert p.counters().truncated_packets == 1


def test_wire_len_is_kept_for_copies_truncated_by_the_caller():
    with Producer(data_size=SIZE) as p, Consumer(p.fd) as c:
        assert p.push(b"\xaa" * 128, wire_len=1500)
        (r,) = c.records()
        assert r.data == b"\xaa" * 128 and r.wire_len == 1500 and r.truncated
