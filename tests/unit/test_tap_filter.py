"""The tap's capture filter through libmirrord as an embedder links it: filter, then rate."""
import ctypes
import struct

import pytest
from fixtures.libmirrord import TapCounters as Counters
from fixtures.libmirrord import TapRule as Rule

from mirrord.filter import compile_filter


@pytest.fixture(scope="module")
def lib(libmirrord_dir):
    so = ctypes.CDLL(str(libmirrord_dir / "libmirrord.so.0"))
    so.mr_tap__filtered.restype = ctypes.c_uint64
    so.mr_tap__offer.restype = ctypes.c_uint
    return so


def _udp(dport):
    eth = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    return eth + ip + struct.pack("!HHHH", 1234, dport, 8, 0)


def test_filter_then_rate_exact(lib):
    t = ctypes.c_void_p()
    assert lib.mr_tap__create_no_ring(ctypes.byref(t)) == 0
    try:
        prog = compile_filter("udp port 53")
        buf = ctypes.create_string_buffer(prog, len(prog))
        assert lib.mr_tap__set_rule_filter(t, ctypes.byref(Rule(7, 10, 0, 0)), buf, len(prog) // 8) == 0
        # 5000 frames, every fifth one DNS: 1000 match
        frames = [_udp(53 if i % 5 == 0 else 1000 + i % 7) for i in range(5000)]
        bufs = [ctypes.create_string_buffer(f, len(f)) for f in frames]
        data = (ctypes.c_void_p * len(bufs))(*[ctypes.addressof(b) for b in bufs])
        lens = (ctypes.c_uint32 * len(bufs))(*[len(f) for f in frames])
        lib.mr_tap__offer(t, data, lens, len(bufs), 1, 0)
        c = Counters()
        lib.mr_tap__counters(t, ctypes.byref(c))
        filtered = lib.mr_tap__filtered(t)
        assert (c.seen, filtered, c.sampled, c.dropped_no_ring) == (5000, 4000, 100, 100)
        # a bad program is refused, the rule stays
        bad = ctypes.create_string_buffer(b"\x06\x00\x00\x00\x00\x00\x00\x00" + b"\x15\x00\x09\x00" + b"\0" * 4, 16)
        assert lib.mr_tap__set_rule_filter(t, ctypes.byref(Rule(7, 10, 0, 0)), ctypes.byref(bad, 8), 1) < 0
        assert lib.mr_tap__set_rule_filter(t, ctypes.byref(Rule(7, 1, 0, 0)), None, 0) == 0
        lib.mr_tap__offer(t, data, lens, 10, 1, 0)
        assert lib.mr_tap__filtered(t) == 4000  # no filter now: every frame sampled
        lib.mr_tap__counters(t, ctypes.byref(c))
        assert c.sampled == 110
    finally:
        lib.mr_tap__destroy(t)
