"""Random bytes over the header and data area of a live ring: the consumer reports the
corruption, never reads out of bounds, and recovers; clean traffic afterwards is
delivered byte-identical.  (The C tests do the same under AddressSanitizer.)
"""
import mmap
import random
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from mirrord.ring import HEADER_SIZE, Consumer, Producer

SIZE = 1 << 16
MAP = HEADER_SIZE + SIZE
# what a scribbler may hit: the indices, the wake-up flag, the counters, the data area
SHARED_FIELDS = [64, 128, 192, 256, 320]


_PATTERN = bytes(range(256)) * 12


def _frame(seq: int, n: int) -> bytes:
    """Byte i is (seq * 31 + i) mod 256."""
    o = (seq * 31) & 0xFF
    return _PATTERN[o:o + n]


def _drain_all(c: Consumer) -> list:
    out = []
    for _ in range(8):  # resets may need a couple of passes to resync with the producer
        out += c.records()
    return out


def _assert_recovered(p: Producer, c: Consumer, first_seq: int) -> None:
    _drain_all(c)
    p.push(b"\x00" * 64)  # a clean push republishes the producer's index
    _drain_all(c)
    before = c.counters().corrupt_events
    frames = [_frame(first_seq + i, 60 + 13 * i) for i in range(50)]
    assert all(p.push(f) for f in frames)
    got = list(c.records())
    assert [r.data for r in got] == frames
    assert c.counters().corrupt_events == before


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rounds=st.integers(5, 40))
def test_scribbled_ring_is_detected_and_recovered(tmp_path_factory, seed, rounds):
    rnd = random.Random(seed)
    path = tmp_path_factory.mktemp("r") / "r.ring"
    with Producer(path, data_size=SIZE, max_frame=2048) as p, Consumer.open(path) as c, \
            open(path, "r+b") as f, mmap.mmap(f.fileno(), MAP) as m:
        seq = 0
        for _ in range(rounds):
            for _ in range(rnd.randrange(1, 80)):
                p.push(_frame(seq, rnd.randrange(60, 1500)))
                seq += 1
            for _ in range(rnd.randrange(1, 6)):
                if rnd.random() < 0.3:
                    off = rnd.choice(SHARED_FIELDS) + rnd.randrange(0, 8)
                else:
                    off = HEADER_SIZE + rnd.randrange(0, SIZE - 8)
                m[off:off + 8] = rnd.randbytes(8)
            for r in c.records(budget=rnd.randrange(1, 200)):
                assert len(r.data) <= 2048  # whatever it returns is within the declared bounds
        # the producer's totals are private and exact; the shared copy (which the scribbler
        # may have hit) is republished by the next push.  A consumer that reset onto a
        # scribbled prod resyncs after one producer round (a drop that republishes prod).
        _drain_all(c)
        p.push(_frame(seq, 64))
        _drain_all(c)
        assert p.push(_frame(seq + 1, 64))
        seq += 2
        k = p.counters()
        assert k.pushed_packets + k.dropped_ring_full_packets == seq
        _assert_recovered(p, c, seq)


def test_corruption_is_reported():
    with Producer(data_size=SIZE) as p, Consumer(p.fd) as c:
        for i in range(20):
            p.push(_frame(i, 200))
        with mmap.mmap(p.fd, MAP) as m:
            # the first record's size field: not a multiple of 8
            m[HEADER_SIZE:HEADER_SIZE + 4] = (13).to_bytes(4, "little")
        assert list(c.records()) == []
        k = c.counters()
        assert k.corrupt_events == 1
        assert k.corrupt_bytes == 20 * 240  # every record up to the producer's index skipped
        _assert_recovered(p, c, 20)


def test_concurrent_scribbling_while_the_producer_pushes():
    with Producer(data_size=SIZE, max_frame=2048) as p, Consumer(p.fd) as c, \
            mmap.mmap(p.fd, MAP) as m:
        stop = threading.Event()
        pushed = [0]

        def produce():
            seq = 0
            while not stop.is_set() and seq < 200_000:
                p.push(_frame(seq, 60 + seq % 700))
                seq += 1
            pushed[0] = seq

        t = threading.Thread(target=produce)
        t.start()
        rnd = random.Random(1)
        try:
            for i in range(3000):
                if i % 10 == 0:
                    # over the unread part (the producer will not touch it): the header of
                    # the next record, or 8 aligned bytes anywhere in the unread span
                    k = c.counters()
                    unread = (k.prod - k.cons) // 8
                    if unread:
                        at = k.cons if i % 20 == 0 else k.cons + 8 * rnd.randrange(unread)
                        off = HEADER_SIZE + at % SIZE
                        m[off:off + 8] = rnd.randbytes(8)
                for r in c.records(budget=64):
                    assert len(r.data) <= 2048
        finally:
            stop.set()
            t.join()
        assert c.counters().corrupt_events > 0
        p.push(b"\x00" * 64)  # republishes the producer's totals
        k = p.counters()
        assert k.pushed_packets + k.dropped_ring_full_packets == pushed[0] + 1
        _assert_recovered(p, c, pushed[0] + 1)
