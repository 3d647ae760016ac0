"""Sinks with real devices: what tcpdump captures on the mirror output is the original frame.

A ring is filled with the frame set (IPv4/UDP, IPv6/TCP, 802.1Q, QinQ, ARP, LLDP, a 60-byte
runt, a 9000-byte jumbo), drained by the C routine into the sink, and the capture compared.
"""
import asyncio
import subprocess

import pytest
from fixtures.frames import frame_set, l3_of, read_pcap

from mirrord.ring import Consumer, Producer, Routes
from mirrord.sinks import InterfaceSink, TapSink, TunSink

pytestmark = pytest.mark.root

SESSION = 0x1234
DLT_EN10MB, DLT_RAW = 1, {12, 14, 101}


def _push_all(p, frames):
    for i, (_, f) in enumerate(frames):
        assert p.push(f, ifindex=5, session_id=SESSION, ts_ns=i)


def _drain(sink, frames):
    with Producer(data_size=1 << 20) as p, Consumer(p.fd) as c:
        _push_all(p, frames)
        routes = Routes([(SESSION, sink.fd, sink.mode)])
        assert c.drain_routes(routes, budget=1000) == len(frames)
        return routes.stats(0)


def test_tap_shows_every_frame_byte_identical_in_order(netns, capture):
    frames = frame_set()

    async def main():
        async with TapSink("mirror0") as sink:
            assert sink.is_open, sink.error
            subprocess.run(["ip", "link", "set", "mirror0", "mtu", "9000"], check=True)
            cap = capture(netns, "mirror0")
            st = _drain(sink, frames)
            cap.stop()
            return st, cap

    st, cap = asyncio.run(main())
    assert st.packets == len(frames) and st.dropped_error == 0 and st.dropped_busy == 0
    assert st.bytes == sum(len(f) for _, f in frames)
    linktype, got = read_pcap(cap.path)
    assert linktype == DLT_EN10MB
    assert [g.hex() for g in got] == [f.hex() for _, f in frames]
    # the device was ours and went away with the daemon's fd
    assert subprocess.run(["ip", "link", "show", "mirror0"], capture_output=True).returncode != 0


def test_tun_shows_only_ip_packets_stripped_of_l2(netns, capture):
    frames = frame_set()

    async def main():
        async with TunSink("mirtun0") as sink:
            assert sink.is_open, sink.error
            subprocess.run(["ip", "link", "set", "mirtun0", "mtu", "9000"], check=True)
            cap = capture(netns, "mirtun0")
            st = _drain(sink, frames)
            cap.stop()
            return st, cap

    st, cap = asyncio.run(main())
    ip = [l3_of(f)[1] for _, f in frames if l3_of(f)[0] in (0x0800, 0x86DD)]
    assert len(ip) == 6  # ARP and LLDP are not IP
    assert st.packets == 6 and st.dropped_not_ip == 2
    linktype, got = read_pcap(cap.path)
    assert linktype in DLT_RAW
    assert [g.hex() for g in got] == [p.hex() for p in ip]


def test_interface_sink_frames_leave_through_a_veth(netns, capture):
    subprocess.run(["ip", "link", "add", "mout0", "mtu", "9000", "type", "veth",
                    "peer", "name", "mcap0", "mtu", "9000"], check=True)
    for dev in ("mout0", "mcap0"):  # no link-local address: no IPv6 chatter in the capture
        subprocess.run(["ip", "link", "set", dev, "addrgenmode", "none", "up"], check=True)
    frames = frame_set()

    async def main():
        async with InterfaceSink("mout0") as sink:
            assert sink.is_open, sink.error
            cap = capture(netns, "mcap0", extra=["-Q", "in"])
            st = _drain(sink, frames)
            cap.stop()
            return st, cap

    st, cap = asyncio.run(main())
    assert st.packets == len(frames), st
    _, got = read_pcap(cap.path)
    assert [g.hex() for g in got] == [f.hex() for _, f in frames]


def test_missing_output_is_counted_not_fatal(netns):
    async def main():
        async with InterfaceSink("nosuch0") as sink:
            assert not sink.is_open
            assert sink.error == "interface nosuch0: no such interface nosuch0"
            return _drain(sink, frame_set())

    st = asyncio.run(main())
    assert st.dropped_no_output == len(frame_set()) and st.packets == 0


def test_tap_name_taken_by_another_kind_of_device(netns):
    subprocess.run(["ip", "link", "add", "taken0", "type", "veth", "peer", "name", "taken1"], check=True)

    async def main():
        async with TapSink("taken0") as sink:
            return sink.is_open, sink.error

    is_open, error = asyncio.run(main())
    assert not is_open
    assert error.startswith("tap taken0: ")
