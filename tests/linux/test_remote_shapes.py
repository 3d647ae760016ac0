"""Every frame shape through every remote output, IPv4 and IPv6 collectors: runts (1, 13, 14
bytes), an Ethernet header alone, a 9216-byte jumbo (cut to the veth's 9100 MTU, counted),
an IPv6 fragment, a non-IP ethertype, 802.1ad+802.1Q+802.1Q: what the collector receives is
the original frame byte for byte (a prefix of it only for the jumbo), in order (VXLAN and
GENEVE: each flow's copies in order)."""
import struct

import pytest
import test_remote as tr
from fixtures.collector import THEIRS4, THEIRS6
from fixtures.frames import eth, ipv4_udp

pytestmark = pytest.mark.root


def shapes():
    v6frag = struct.pack("!IHBB", 6 << 28, 8 + 16, 44, 64) + bytes(15) + b"\1" + bytes(15) + b"\2" + \
        struct.pack("!BBHI", 17, 0, 1, 0x1234) + struct.pack("!HHHH", 1, 2, 16, 0) + b"x" * 8
    return [b"\x01", bytes(13), bytes(14), eth(0x0800, b""),
            eth(0x0800, ipv4_udp(bytes(i & 0xFF for i in range(9216 - 14 - 28)))),
            eth(0x86DD, v6frag), eth(0x9000, b"loop"),
            eth(0x0800, ipv4_udp(b"q"), tags=((0x88A8, 1), (0x8100, 2), (0x8100, 3)))]


@pytest.mark.parametrize("kind", ["vxlan", "geneve", "erspan2", "erspan3"])
@pytest.mark.parametrize("remote", [THEIRS4, THEIRS6])
def test_every_shape_arrives_byte_for_byte(collector, capture, kind, remote):
    frames = shapes()
    cap = capture(collector.ns, collector.iface, extra=tr.BIG)
    if kind.startswith("erspan"):
        spec = f'{{ type = "erspan", remote = "{remote}", version = {kind[-1]} }}'
    else:
        spec = f'{{ type = "{kind}", remote = "{remote}", vni = 5 }}'
    sink = tr._open(spec)
    try:
        st = tr._drain(sink, frames)
    finally:
        sink.release()
    tr._stop(cap, len(frames))
    got = tr._outers(cap.path)
    (row,) = sink.collectors()
    assert st.packets == row["packets"] == len(frames) == len(got)
    assert st.dropped_error == st.dropped_busy == row["dropped_unreachable"] == 0
    assert row["truncated_mtu"] == 1 and row["mtu"] == 9100
    # the jumbo: cut to fit 9100 with the outer headers, never fragmented
    (cut,) = [o for o in got if o.ip_len == 9100]
    assert cut.inner == frames[4][:len(cut.inner)] and len(cut.inner) < len(frames[4])
    want = frames[:4] + [cut.inner] + frames[5:]
    if kind.startswith("erspan"):  # one raw socket: in order
        assert [o.inner for o in got] == want
    else:  # a pool of UDP sockets: each flow's copies in order (tr._by_flow)
        assert tr._by_flow([o.inner for o in got]) == tr._by_flow(want)
    # bytes: what mirrord wrote after the outer IP header (UDP + VXLAN/GENEVE, or GRE + ERSPAN)
    assert row["bytes"] == sum((8 if o.proto == 17 else 0) + len(o.header) + len(o.inner) for o in got)
