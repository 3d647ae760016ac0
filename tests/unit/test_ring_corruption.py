"""Random bytes over the header and data area of a live ring: the consumer reports the
corruption, never reads out of bounds, and recovers; clean traffic afterwards is
delivered byte-identical.  (The C tests do the same under AddressSanitizer.)
"""
import mmap
import random
import threading
import time

import pytest
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


def _u32(v: int) -> bytes:
    return v.to_bytes(4, "little")


# (field scribbled, ring byte offset, new bytes, what the reason must say).  The first
# record starts at data offset 0: size @0 (240 for a 200-byte frame), flags @4, cap_len @8,
# wire_len @12.  The producer index is at header byte 64; 20 records end at 4800.
REC = HEADER_SIZE
SCRIBBLES = [
    ("prod unaligned", 64, (4803).to_bytes(8, "little"), "producer index 4803 is not a multiple of 8"),
    ("prod ahead", 64, (SIZE + 8).to_bytes(8, "little"),
     f"producer index {SIZE + 8} is more than the ring's {SIZE} bytes ahead of the consumer index 0"),
    ("size odd", REC, _u32(13), "record at data offset 0: size 13 is not a multiple of 8"),
    ("size zero", REC, _u32(0), "record at data offset 0: size 0 is below 8"),
    ("size past", REC, _u32(8000), "record at data offset 0: size 8000 runs past the 4800 bytes"),
    ("flags", REC + 4, (0x80).to_bytes(2, "little"), "record at data offset 0: flags 0x80 has bits outside"),
    ("pad", REC + 4, (1).to_bytes(2, "little"),
     f"record at data offset 0: pad record of size 240 does not end at the ring's end ({SIZE} bytes left)"),
    ("short", REC, _u32(16), "record at data offset 0: frame record of size 16 is shorter than its 40-byte header"),
    ("cap_len", REC + 8, _u32(70000), "record at data offset 0: cap_len 70000 exceeds the ring's max_frame 2048"),
    ("wire_len", REC + 12, _u32(10), "record at data offset 0: wire_len 10 is below cap_len 200"),
    ("stride", REC + 8, _u32(100), "record at data offset 0: size 240 is not the header plus cap_len rounded up "
                                   "to 8 (144)"),
    ("truncated", REC + 4, (2).to_bytes(2, "little"),
     "record at data offset 0: the TRUNCATED flag is set but cap_len 200 == wire_len 200"),
]


@pytest.mark.parametrize("what,off,data,reason", SCRIBBLES, ids=[x[0] for x in SCRIBBLES])
def test_corruption_names_the_field_and_the_bound(what, off, data, reason):
    """Invariant 5: bad ring contents get a reason that names the field and the bound."""
    with Producer(data_size=SIZE, max_frame=2048) as p, Consumer(p.fd) as c:
        assert c.corruption() == ""
        for i in range(20):
            p.push(_frame(i, 200))
        with mmap.mmap(p.fd, MAP) as m:
            m[off:off + len(data)] = data
        for _ in range(3):  # one event however often the consumer looks (no reset spin)
            assert list(c.records()) == []
        assert c.counters().corrupt_events == 1
        assert c.corruption().startswith(reason), c.corruption()
        _assert_recovered(p, c, 20)
        if off != 64:  # (a reset onto a scribbled prod resyncs through a second one)
            assert c.corruption().startswith(reason)  # the last reason stays until the next reset


def test_prod_behind_the_read_position_is_named_and_gone_back_to():
    """A reset goes to the producer's index even behind the read position: the records in
    between are delivered again (documented in ring-abi section 8), and nothing stalls."""
    with Producer(data_size=SIZE, max_frame=2048) as p, Consumer(p.fd) as c, mmap.mmap(p.fd, MAP) as m:
        for i in range(20):
            p.push(_frame(i, 200))
        assert len(list(c.records())) == 20  # read position 4800, released
        p.push(_frame(20, 200))
        m[64:72] = (2400).to_bytes(8, "little")  # the producer index moves back
        for _ in range(3):  # counted once, not once per look
            assert list(c.records()) == []
        assert c.corruption() == "producer index 2400 is behind the consumer's read position 4800"
        assert c.counters().corrupt_events == 1
        # the producer's next submit republishes its real index: 10..19 (behind the
        # scribbled index, still intact) go out again, then 20 and 21
        p.push(_frame(21, 200))
        assert [r.data for r in c.records()] == [_frame(i, 200) for i in range(10, 22)]
        assert c.counters().corrupt_events == 1
        _assert_recovered(p, c, 22)


def test_prod_behind_on_a_full_ring_resyncs_at_the_next_push():
    """Going back releases a cons the full ring's producer finds impossible: it drops the
    copy and republishes its index at once, and the consumer resyncs (the ring's
    contents are skipped and counted as a second corruption event)."""
    with Producer(data_size=SIZE, max_frame=2048) as p, Consumer(p.fd) as c, mmap.mmap(p.fd, MAP) as m:
        for i in range(20):
            p.push(_frame(i, 200))
        assert len(list(c.records())) == 20  # read position 4800
        seq = 20
        while p.push(_frame(seq, 200)):
            seq += 1
        m[64:72] = (2400).to_bytes(8, "little")
        assert list(c.records()) == []
        assert c.corruption() == "producer index 2400 is behind the consumer's read position 4800"
        assert not p.push(_frame(seq, 200))  # impossible cons: dropped, prod republished
        assert list(c.records()) == []
        assert c.corruption().startswith("producer index ")
        assert "more than the ring's 65536 bytes ahead of the consumer index 2400" in c.corruption()
        k = c.counters()
        assert (k.corrupt_events, k.prod, k.cons) == (2, k.prod, k.prod)
        _assert_recovered(p, c, seq + 1)


# stride 256 (40-byte header + 216 bytes): records tile the ring, no PAD ever
_N = 216


def _fill_a_wrapped_ring_then_drain(p: Producer, c: Consumer) -> tuple[int, list]:
    """Two laps, then the ring filled to the last byte and drained: the producer's cached
    cons is the old one (its next reserve rereads hdr->cons) and every byte ahead of the
    read position holds a valid record of this lap."""
    seq = 0
    for _ in range(3):
        for _ in range(100):
            assert p.push(_frame(seq, _N))
            seq += 1
        assert len(list(c.records())) == 100
    lap = []
    while p.push(_frame(seq, _N)):
        lap.append(_frame(seq, _N))
        seq += 1
    assert len(lap) == SIZE // 256
    assert [r.data for r in c.records()] == lap
    return seq + 1, lap  # (the push that found the ring full took a sequence number)


def test_prod_scribbled_ahead_of_a_wrapped_ring_does_not_livelock():
    """A prod scribbled ahead within one ring: the consumer reads stale records up to it
    (they look valid) and releases a cons the producer finds impossible; the producer
    republishes its index, which is now behind the read position, and the consumer goes
    back to it.  A consumer that stayed there instead would wait forever while the
    producer dropped every copy (found in review)."""
    with Producer(data_size=SIZE, max_frame=2048) as p, Consumer(p.fd) as c, mmap.mmap(p.fd, MAP) as m:
        seq, lap = _fill_a_wrapped_ring_then_drain(p, c)
        real = c.counters().prod
        # twice, the second right after the first recovery (the consumer's last reset was
        # about the producer's real index then, and must not make it wait on that value)
        for events in (1, 2):
            m[64:72] = (real + 10 * 256).to_bytes(8, "little")
            assert [r.data for r in c.records()] == lap[:10]  # stale, delivered again
            assert not p.push(_frame(seq, _N))  # cons ahead of the producer: impossible
            seq += 1
            assert list(c.records()) == []
            assert c.corruption() == f"producer index {real} is behind the consumer's read position {real + 2560}"
            assert c.counters().corrupt_events == events
        fresh = [_frame(seq + i, _N) for i in range(300)]
        delivered = []
        for f in fresh:  # more than a ring's worth: the producer is not stuck
            assert p.push(f)
            delivered += [r.data for r in c.records()]
        assert delivered == fresh
        assert c.counters().corrupt_events == 2
        _assert_recovered(p, c, seq + 300)


def test_a_good_prod_is_taken_even_if_the_last_reset_named_the_same_value():
    """The "wait on the bad index already counted" shortcut applies to bad indices only.
    (mr_cons__reset reloads prod, so the value it acted on can differ from the one next()
    saw; the test sets that state directly.)"""
    with Producer(data_size=SIZE, max_frame=2048) as p, Consumer(p.fd) as c:
        assert p.push(_frame(0, 200))
        c._c.corrupt_why = 1  # MR_CORRUPT_PROD
        c._c.corrupt_val = 240  # the producer's real index after that push
        assert [r.data for r in c.records()] == [_frame(0, 200)]


def test_an_aligned_bad_prod_is_landed_on_and_counted_once():
    """Far ahead: the reset lands on it, so it reads as empty (no wait state, no recount,
    no spin); the producer's next submit, measured from there, is bad too, and the
    consumer resyncs onto it."""
    with Producer(data_size=SIZE, max_frame=2048) as p, Consumer(p.fd) as c, mmap.mmap(p.fd, MAP) as m:
        for i in range(20):
            p.push(_frame(i, 200))
        m[64:72] = (1 << 40).to_bytes(8, "little")
        for _ in range(3):
            assert list(c.records()) == []
            assert c.prepare_sleep()
        k = c.counters()
        assert (k.corrupt_events, k.cons) == (1, 1 << 40)
        assert p.push(_frame(20, 200))  # (its cached cons says there is room)
        assert list(c.records()) == []  # resynced onto its index: the 21 unread copies skipped
        assert c.counters().corrupt_events == 2
        _assert_recovered(p, c, 21)


def test_waiting_on_a_counted_bad_prod_sleeps_instead_of_spinning():
    with Producer(data_size=SIZE, max_frame=2048) as p, Consumer(p.fd) as c, mmap.mmap(p.fd, MAP) as m:
        for i in range(20):
            p.push(_frame(i, 200))
        assert len(list(c.records())) == 20
        assert c.prepare_sleep()  # empty: sleep
        m[64:72] = (4803).to_bytes(8, "little")
        assert not c.prepare_sleep()  # a new value: look at it first
        assert list(c.records()) == []
        assert c.corruption() == "producer index 4803 is not a multiple of 8"
        assert c.prepare_sleep()  # the same bad value, counted: sleep until the producer kicks
        assert c.counters().corrupt_events == 1
        p.push(_frame(20, 200))
        assert not c.prepare_sleep()
        assert [r.data for r in c.records()] == [_frame(20, 200)]


def test_concurrent_scribbling_while_the_producer_pushes():
    with Producer(data_size=SIZE, max_frame=2048) as p, Consumer(p.fd) as c, \
            mmap.mmap(p.fd, MAP) as m:
        stop = threading.Event()
        pushed = [0]

        def produce():
            seq = 0
            while not stop.is_set() and seq < 5_000_000:
                p.push(_frame(seq, 60 + seq % 700))
                seq += 1
            pushed[0] = seq

        t = threading.Thread(target=produce)
        t.start()
        rnd = random.Random(1)
        # at least 3000 rounds, then on until a scribble has landed in an unread record and
        # been seen (under load the consumer may find the ring empty at every scribble of the
        # first rounds), bounded in rounds and time
        deadline = time.monotonic() + 60
        i = 0
        try:
            while i < 3000 or (c.counters().corrupt_events == 0 and i < 2_000_000
                               and time.monotonic() < deadline and t.is_alive()):
                i += 1
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
