"""A capture filter on a multi-buffer frame (an AF_XDP jumbo chain) decides as `tcpdump -r`
does on the whole frame: loads past the first fragment see the frame's bytes, not the end
of the first buffer (docs/configuration.md: "a frame is mirrored exactly when
`tcpdump -r FILE EXPR` would keep it")."""
import ctypes
import shutil
import subprocess

import pytest
from fixtures.frames import eth, ipv4_udp, read_pcap, write_pcap
from fixtures.libmirrord import TapCounters as Counters
from fixtures.libmirrord import TapFrag as Frag
from fixtures.libmirrord import TapFrame as Frame
from fixtures.libmirrord import TapRule as Rule

from mirrord.filter import compile_filter


@pytest.fixture(scope="module")
def lib(libmirrord_dir):
    so = ctypes.CDLL(str(libmirrord_dir / "libmirrord.so.0"))
    so.mr_tap__filtered.restype = ctypes.c_uint64
    so.mr_tap__offer_burst.restype = ctypes.c_uint
    return so


def jumbo(marker_at, value):
    f = bytearray(eth(0x0800, ipv4_udp(bytes(9000))))
    f[marker_at] = value
    return bytes(f)


EXPRS = ["ether[9000] = 1", "ether[5000] = 1", "ether[3839] = 1 and ether[3840] = 2",
         "greater 9000", "udp and ether[9041] = 1", "ether[9000:2] = 0x0100"]


@pytest.mark.parametrize("expr", EXPRS)
def test_multibuffer_frame_filtered_as_tcpdump_filters_it(lib, tmp_path, expr):
    frames = [jumbo(9000, 1), jumbo(5000, 1), jumbo(9041, 1), jumbo(100, 1)]
    frames.append(bytes(b if i != 3840 else 2 for i, b in enumerate(jumbo(3839, 1))))
    pcap = tmp_path / "j.pcap"
    write_pcap(pcap, frames, snaplen=262144)
    tcpdump = shutil.which("tcpdump") or pytest.skip("no tcpdump")
    out = subprocess.run([tcpdump, "-r", str(pcap), "-w", str(tmp_path / "sel.pcap"), expr],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    _, sel = read_pcap(tmp_path / "sel.pcap")
    want = [f in sel for f in frames]  # per frame: does tcpdump keep it
    t = ctypes.c_void_p()
    assert lib.mr_tap__create_no_ring(ctypes.byref(t)) == 0
    try:
        prog = compile_filter(expr)
        buf = ctypes.create_string_buffer(prog, len(prog))
        assert lib.mr_tap__set_rule_filter(t, ctypes.byref(Rule(7, 1, 0, 0)), buf, len(prog) // 8) == 0
        keep, got = [], []
        for f in frames:  # 3840-byte buffers, as an AF_XDP UMEM frame holds (docs/fast-path.md)
            parts = [f[o:o + 3840] for o in range(0, len(f), 3840)]
            bufs = [ctypes.create_string_buffer(p, len(p)) for p in parts]
            frags = (Frag * len(bufs))(*[Frag(ctypes.addressof(b), len(p)) for b, p in zip(bufs, parts)])
            keep += [bufs, frags]
            before = lib.mr_tap__filtered(t)
            fr = Frame(frags, len(parts))
            lib.mr_tap__offer_burst(t, ctypes.byref(fr), 1, 1, 0)
            got.append(lib.mr_tap__filtered(t) == before)
        c = Counters()
        lib.mr_tap__counters(t, ctypes.byref(c))
        assert c.seen == len(frames) and c.seen == lib.mr_tap__filtered(t) + c.sampled
        assert got == want, expr
    finally:
        lib.mr_tap__destroy(t)
