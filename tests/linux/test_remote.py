"""Remote outputs for real: copies drained by the C routine (mr_cons__drain, DRAIN_ENCAP)
into VXLAN, GENEVE and ERSPAN II/III, sent over a veth to a collector namespace.

VXLAN is decapsulated by the collector's kernel (``type vxlan external``) and tcpdump on
that device must show the original frames byte for byte, in order.  GENEVE and ERSPAN
(no kernel modules here) are captured on the collector's veth and decoded by the test
(tests/fixtures/collector.py), ERSPAN also by tshark.
"""
import asyncio
import shutil
import struct
import subprocess
import time

import pytest
from fixtures.collector import MORE4, OURS4, OURS6, THEIRS4, THEIRS6, decode
from fixtures.frames import eth, frame_set, ipv4_udp, read_pcap

from mirrord._ring import lib
from mirrord.config import loads
from mirrord.ring import Consumer, Producer, Routes
from mirrord.sinks import sink_for

pytestmark = pytest.mark.root

SESSION = 0x5151
# tcpdump's ring holds buffer / snaplen frames (immediate mode): with -s 0 (256 KiB slots)
# and the default 2 MiB that is 8, and a burst of copies overruns it.  Jumbo-sized slots and
# a 16 MiB buffer take every burst these tests send.
BIG = ["-s", "9300", "-B", "16384"]


def _output(spec: str):
    return loads(f'[[session]]\nname = "r"\ninput = ["eth1"]\noutput = {spec}\n').sessions[0].output


def _open(spec: str):
    sink = sink_for(_output(spec))
    sink.opened(sink.open_blocking())
    return sink


def _drain(sink, frames, ts0=1_000_000_000):
    """Push the frames into a ring (ts_ns ts0 + i * 1000) and drain them in one C call."""
    with Producer(data_size=1 << 22) as p, Consumer(p.fd) as c:
        for i, f in enumerate(frames):
            assert p.push(f, ifindex=7, session_id=SESSION, ts_ns=ts0 + i * 1000)
        routes = Routes([(SESSION, sink.fd, sink.mode, sink.encap)])
        assert c.drain_routes(routes, budget=len(frames) + 10) == len(frames)
        return routes.stats(0)


def _stop(cap, n, timeout=10.0):
    """Stop the capture once it holds at least n frames (tcpdump writes them with -U as
    they come; a loaded machine makes it lag behind the veth), or after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if len(read_pcap(cap.path)[1]) >= n:
                break
        except (OSError, struct.error):
            pass
        time.sleep(0.05)
    cap.stop()


def _outers(path, proto=None):
    _, got = read_pcap(path)
    out = [o for o in map(decode, got) if o is not None]
    return [o for o in out if proto is None or o.proto == proto]


def _by_flow(frames):
    """The frames grouped by inner flow (the product's symmetric flow hash), each group in
    its order: VXLAN and GENEVE copies of one flow leave on one socket of the collector's
    pool, in order; copies of different flows leave on different sockets (one sendmmsg
    each), so their relative order is not kept (as ECMP would not keep it)."""
    out = {}
    for f in frames:
        out.setdefault(lib.mr_flow__hash(f, len(f)), []).append(bytes(f))
    return out


def _flow_frames(n_flows=12, per_flow=3):
    """Frames of several UDP flows, both directions of each, interleaved."""
    out = []
    for k in range(per_flow):
        for i in range(n_flows):
            a, b = f"10.1.{i}.1", f"10.2.{i}.2"
            out.append(eth(0x0800, ipv4_udp(b"q%d-%d" % (i, k), src=a, dst=b, sport=1000 + i, dport=53)))
            out.append(eth(0x0800, ipv4_udp(b"r%d-%d" % (i, k), src=b, dst=a, sport=53, dport=1000 + i)))
    return out


def _flow_of(frame: bytes) -> int:
    """The flow index _flow_frames gave the frame (its third address byte)."""
    return frame[14 + 12 + 2]


@pytest.mark.parametrize("ports", [None, 1])
@pytest.mark.parametrize("remote", [THEIRS4, THEIRS6])
def test_vxlan_kernel_decapsulates_the_original_frames_in_order(collector, capture, remote, ports):
    """Byte for byte, every copy, each flow's in order; with one source port, all of them in
    the order they were mirrored."""
    vx = collector.vxlan()
    frames = [f for _, f in frame_set()]
    cap = capture(collector.ns, vx, extra=BIG)
    extra = f", source_ports = {ports}" if ports else ""
    sink = _open(f'{{ type = "vxlan", remote = "{remote}", vni = 42{extra} }}')
    try:
        st = _drain(sink, frames)
    finally:
        sink.release()
    _stop(cap, len(frames))
    assert st.packets == len(frames) and st.dropped_error == st.dropped_busy == 0
    _, got = read_pcap(cap.path)
    assert len(got) == len(frames) and _by_flow(got) == _by_flow(frames)
    if ports == 1:
        assert got == frames
    (row,) = sink.collectors()
    assert row["packets"] == len(frames) and row["bytes"] == sum(16 + len(f) for f in frames)
    assert row["dropped_unreachable"] == row["dropped_error"] == row["truncated_mtu"] == 0


@pytest.mark.parametrize("remote, local", [(THEIRS4, OURS4), (THEIRS6, OURS6)])
def test_vxlan_and_geneve_headers_on_the_wire(collector, capture, remote, local):
    frames = _flow_frames(n_flows=8, per_flow=2) + [f for _, f in frame_set()]
    cap = capture(collector.ns, collector.iface, extra=[*BIG, "udp"])
    for spec in (f'{{ type = "vxlan", remote = "{remote}", local = "{local}", vni = 42, ttl = 9, dscp = 10 }}',
                 f'{{ type = "geneve", remote = "{remote}", vni = 7 }}'):
        sink = _open(spec)
        try:
            st = _drain(sink, frames)
        finally:
            sink.release()
        assert st.packets == len(frames)
    _stop(cap, 2 * len(frames))
    got = _outers(cap.path, 17)
    assert len(got) == 2 * len(frames)
    vx, gn = got[:len(frames)], got[len(frames):]
    assert _by_flow([o.inner for o in vx]) == _by_flow(frames) == _by_flow([o.inner for o in gn])
    for o in vx:
        assert (o.src, o.dst, o.dport) == (local, remote, 4789) and o.df
        assert o.header == bytes([0x08, 0, 0, 0, 0, 0, 42, 0])  # I flag, VNI 42
        assert 49152 <= o.sport <= 65535
    for o in gn:
        assert (o.dst, o.dport) == (remote, 6081)
        assert o.header == bytes([0, 0, 0x65, 0x58, 0, 0, 7, 0])  # ver 0, no options, Ethernet, VNI 7
    # the source port follows the flow, the same both ways; different flows differ
    ports = {}
    for o in vx:
        f = o.inner
        if f[12:14] == b"\x08\x00" and f[14 + 12] == 10 and f[14 + 13] in (1, 2):
            ports.setdefault(_flow_of(f), set()).add(o.sport)
    assert all(len(p) == 1 for p in ports.values()), ports
    assert len({next(iter(p)) for p in ports.values()}) > 1
    # TTL and DSCP reach the wire (checked with tcpdump's own decoding, first copy)
    if remote == THEIRS4:
        txt = subprocess.run(["tcpdump", "-r", str(cap.path), "-c", "1", "-v", "-n"], capture_output=True,
                             text=True).stdout
        assert "ttl 9" in txt and "tos 0x28" in txt, txt


def test_source_ports_pool_size_and_a_second_pool_takes_other_ports(collector, capture):
    """source_ports = 4: 40 flows leave from exactly 4 source ports in 49152-65535, each flow
    (both ways) from one.  A second pool to the same collector, type, VNI and port opened
    while the first is (a reload) starts at the same hashed port, finds it taken
    (EADDRINUSE) and takes 4 others."""
    frames = _flow_frames(n_flows=40, per_flow=1)
    cap = capture(collector.ns, collector.iface, extra=[*BIG, "udp", "port", "4789"])
    spec = f'{{ type = "vxlan", remote = "{THEIRS4}", vni = 42, source_ports = 4 }}'
    a, b = _open(spec), _open(spec)
    try:
        assert _drain(a, frames).packets == len(frames)
        assert _drain(b, frames).packets == len(frames)
    finally:
        a.release()
        b.release()
    _stop(cap, 2 * len(frames))
    got = _outers(cap.path, 17)
    assert len(got) == 2 * len(frames)
    pa, pb = {}, {}
    for ports, half in ((pa, got[:len(frames)]), (pb, got[len(frames):])):
        for o in half:
            ports.setdefault(_flow_of(o.inner), set()).add(o.sport)
        assert len(ports) == 40 and all(len(p) == 1 for p in ports.values()), ports
    used_a = set().union(*pa.values())
    used_b = set().union(*pb.values())
    assert len(used_a) == len(used_b) == 4 and all(49152 <= p <= 65535 for p in used_a | used_b)
    assert not used_a & used_b


def _erspan_fields(o):
    flags, ptype, seq = struct.unpack_from("!HHI", o.header)
    w0 = struct.unpack_from("!I", o.header, 8)[0]
    return {"flags": flags, "ptype": ptype, "seq": seq, "ver": w0 >> 28, "t": (w0 >> 10) & 1,
            "session": w0 & 0x3FF, "w1": struct.unpack_from("!I", o.header, 12)[0],
            "w2": struct.unpack_from("!I", o.header, 16)[0] if ptype == 0x22EB else None}


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("remote", [THEIRS4, THEIRS6])
def test_erspan_inner_frames_sequence_and_fields(collector, capture, version, remote):
    frames = [f for _, f in frame_set()] * 3
    cap = capture(collector.ns, collector.iface, extra=[*BIG, "ip", "proto", "47"]
                  if remote == THEIRS4 else [*BIG, "ip6", "proto", "47"])
    sink = _open(f'{{ type = "erspan", remote = "{remote}", version = {version}, session_id = 5 }}')
    try:
        st = _drain(sink, frames)
    finally:
        sink.release()
    _stop(cap, len(frames))
    assert st.packets == len(frames)
    got = _outers(cap.path, 47)
    assert [o.inner for o in got] == frames
    fs = [_erspan_fields(o) for o in got]
    assert [f["seq"] for f in fs] == list(range(len(frames)))  # gapless from 0
    for i, f in enumerate(fs):
        assert f["flags"] == 0x1000 and f["session"] == 5 and f["t"] == 0
        if version == 2:
            assert f["ptype"] == 0x88BE and f["ver"] == 1 and f["w1"] == 7  # index: the ifindex
        else:
            assert f["ptype"] == 0x22EB and f["ver"] == 2
            assert f["w1"] == (1_000_000_000 + i * 1000) // 100  # the record's ts_ns, 100 ns units
            assert (f["w2"] >> 1) & 3 == 1  # Gra: 100 ns
    if shutil.which("tshark"):  # Wireshark reads the same fields
        r = subprocess.run(["tshark", "-r", str(cap.path), "-T", "fields", "-e", "gre.sequence_number",
                            "-e", "erspan.version", "-e", "erspan.spanid", "-e", "erspan.truncated"],
                           capture_output=True, text=True, check=True)
        rows = [line.split("\t") for line in r.stdout.splitlines() if line]
        assert [int(x[0]) for x in rows] == list(range(len(frames)))
        assert {(x[1], x[2], x[3]) for x in rows} == {(str(version - 1), "5", "0")}


def test_truncated_to_a_route_mtu_of_1280_never_fragmented(collector, capture):
    subprocess.run(["ip", "route", "add", f"{MORE4[0]}/32", "dev", "mcol0", "mtu", "1280"], check=True)
    big = eth(0x0800, ipv4_udp(bytes(range(256)) * 20))  # 5170 bytes
    small = eth(0x0800, ipv4_udp(b"s" * 100))
    frames = [big, small, big]
    cap = capture(collector.ns, collector.iface, extra=[*BIG, "host", MORE4[0]])
    for version in (2, 3):
        sink = _open(f'{{ type = "erspan", remote = "{MORE4[0]}", version = {version} }}')
        try:
            st = _drain(sink, frames)
            (row,) = sink.collectors()
        finally:
            sink.release()
        assert st.packets == 3 and st.dropped_error == 0
        assert row["mtu"] == 1280 and row["truncated_mtu"] == 2
    sink = _open(f'{{ type = "vxlan", remote = "{MORE4[0]}" }}')
    try:
        st = _drain(sink, frames)
        (row,) = sink.collectors()
    finally:
        sink.release()
    assert st.packets == 3 and row["truncated_mtu"] == 2
    _stop(cap, 9)
    got = _outers(cap.path)
    assert len(got) == 9
    for o, f in zip(got, frames * 3):
        assert o.ip_len <= 1280 and o.df
        if f is big:
            assert o.ip_len == 1280 and o.inner == f[:len(o.inner)] and len(o.inner) < len(f)
        else:
            assert o.inner == f
    for o, f in zip(got[:6], frames * 2):  # ERSPAN says so: T bit on the cut copies only
        assert _erspan_fields(o)["t"] == (f is big)


def test_spread_flow_keeps_flows_whole_and_moves_only_the_removed_collectors(collector, capture):
    frames = _flow_frames(n_flows=40, per_flow=2)
    three = [THEIRS4, *MORE4]

    def run(remotes, name):
        cap = capture(collector.ns, collector.iface, name=name, extra=[*BIG, "udp", "port", "6081"])
        lst = ", ".join(f'"{a}"' for a in remotes)
        sink = _open(f'{{ type = "geneve", remote = [{lst}], vni = 7, spread = "flow" }}')
        try:
            st = _drain(sink, frames)
            rows = sink.collectors()
        finally:
            sink.release()
        _stop(cap, len(frames))
        assert st.packets == len(frames)
        assert sum(r["packets"] for r in rows) == len(frames)
        where = {}
        for o in _outers(cap.path, 17):
            where.setdefault(_flow_of(o.inner), set()).add(o.dst)
        return where, rows

    where3, rows3 = run(three, "three.pcap")
    assert len(where3) == 40
    assert all(len(w) == 1 for w in where3.values()), where3  # each flow, both ways, on one collector
    used = {next(iter(w)) for w in where3.values()}
    assert used == set(three), used  # 40 flows reach all three
    for r in rows3:
        assert r["packets"] == 4 * sum(1 for w in where3.values() if w == {r["address"]})
    gone = MORE4[0]
    where2, _ = run([a for a in three if a != gone], "two.pcap")
    for flow, w in where2.items():
        assert len(w) == 1
        if where3[flow] != {gone}:
            assert w == where3[flow], (flow, where3[flow], w)  # untouched


def test_erspan_sequence_shows_exactly_the_copies_dropped(collector, capture):
    """The GRE sequence number is taken by every copy, sent or not: while the collector is
    unreachable (an unreachable route) the copies are counted and the collector sees a gap
    of exactly that many."""
    frames = [eth(0x0800, ipv4_udp(b"%05d" % i)) for i in range(250)]
    cap = capture(collector.ns, collector.iface, extra=[*BIG, "ip", "proto", "47"])
    sink = _open(f'{{ type = "erspan", remote = "{THEIRS4}", version = 2, session_id = 9 }}')
    try:
        with Producer(data_size=1 << 22) as p, Consumer(p.fd) as c:
            routes = Routes([(SESSION, sink.fd, sink.mode, sink.encap)])
            for lo, hi, unreachable in ((0, 100, False), (100, 150, True), (150, 250, False)):
                if unreachable:
                    subprocess.run(["ip", "route", "add", "unreachable", f"{THEIRS4}/32"], check=True)
                for f in frames[lo:hi]:
                    assert p.push(f, session_id=SESSION)
                assert c.drain_routes(routes, budget=1000) == hi - lo
                if unreachable:
                    subprocess.run(["ip", "route", "del", "unreachable", f"{THEIRS4}/32"], check=True)
            st = routes.stats(0)
        (row,) = sink.collectors()
    finally:
        sink.release()
    _stop(cap, 200)
    assert st.packets == 200 and st.dropped_error == 50 and st.last_errno != 0
    assert row["packets"] == 200 and row["dropped_unreachable"] == 50 and "UNREACH" in row["last_error"]
    got = _outers(cap.path, 47)
    assert [o.inner for o in got] == frames[:100] + frames[150:]
    seqs = [_erspan_fields(o)["seq"] for o in got]
    assert seqs == list(range(100)) + list(range(150, 250))


def _wait_for(cond, timeout=6.0):
    """Poll cond() (which may refresh a sink) every 50 ms until it holds or timeout: bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


@pytest.mark.parametrize("kind,addr", [("geneve", THEIRS4), ("erspan", THEIRS4), ("geneve", THEIRS6),
                                       ("erspan", THEIRS6)])
def test_icmp_unreachable_holds_the_collector_down_and_never_the_other_session(collector, capture, kind, addr):
    """A collector host that answers ICMP port unreachable (GENEVE: nothing listens on 6081)
    or protocol unreachable (ERSPAN: no GRE there; over IPv6 a parameter problem): after the
    error is read, its copies are dropped and counted unreachable, not sent, for a hold that
    doubles after a failed probe.  GENEVE's pool of connected UDP sockets also reports a
    port unreachable on a send (ECONNREFUSED, when the socket's next sendmmsg call starts):
    that copy is dropped and counted unreachable and the hold starts then, before the
    refresh reads the error queue.  sampled = sent + dropped throughout.  A VXLAN session to a listening collector (the kernel's
    vxlan device) in the same drain calls gets every copy, in order."""
    vx = collector.vxlan()
    cap = capture(collector.ns, vx, extra=BIG)
    bad_spec = (f'{{ type = "geneve", remote = "{addr}", vni = 7 }}' if kind == "geneve"
                else f'{{ type = "erspan", remote = "{addr}", version = 2 }}')
    bad, good = _open(bad_spec), _open(f'{{ type = "vxlan", remote = "{THEIRS4}", vni = 42 }}')
    frames = [eth(0x0800, ipv4_udp(b"copy %d" % i, sport=1000 + i)) for i in range(60)]
    good_sent = []
    try:
        with Producer(data_size=1 << 22) as p, Consumer(p.fd) as c:
            routes = Routes([(1, bad.fd, bad.mode, bad.encap), (2, good.fd, good.mode, good.encap)])

            def burst(fs):
                for i, f in enumerate(fs):  # interleaved: both sessions in every drain call
                    assert p.push(f, ifindex=7, session_id=1 + (i & 1), ts_ns=1)
                assert c.drain_routes(routes, budget=len(fs) + 10) == len(fs)
                good_sent.extend(fs[1::2])

            def col():
                bad.encap.refresh()
                return bad.collectors()[0]

            burst(frames[:20])  # sent: the collector answers each with an ICMP error
            assert _wait_for(lambda: col()["hold_ms"] == 1000)
            row = bad.collectors()[0]
            sent, refused = row["packets"], row["dropped_unreachable"]
            assert sent + refused == 10 and sent >= 1 and row["icmp_errors"] >= 1
            if kind == "erspan":  # a raw socket's send never reports it: all sent
                assert refused == 0
            assert ("ECONNREFUSED" if kind == "geneve" else "ENOPROTOOPT" if ":" not in addr
                    else "EPROTO") in row["last_error"]
            burst(frames[20:60])  # held down: dropped, counted, not sent
            row = bad.collectors()[0]
            assert row["packets"] == sent and row["dropped_unreachable"] == refused + 20
            st = routes.stats(0)
            assert st.packets == sent and st.dropped_error == refused + 20  # sampled = sent + dropped
            assert routes.stats(1).packets == 30 and routes.stats(1).dropped_error == 0
            # the hold ends (a probe): copies go out again; the next error doubles the hold
            assert _wait_for(lambda: col()["hold_ms"] == 0)
            burst(frames[:10])
            row = bad.collectors()[0]
            assert row["packets"] > sent and row["packets"] + row["dropped_unreachable"] == 10 + 20 + 5
            if kind == "erspan":
                assert row["packets"] == 15
            assert _wait_for(lambda: col()["hold_ms"] == 2000)
            assert routes.stats(1).packets == 35 and routes.stats(1).dropped_error == 0
    finally:
        bad.release()
        good.release()
    _stop(cap, len(good_sent))
    _, got = read_pcap(cap.path)
    assert len(got) == len(good_sent) and _by_flow(got) == _by_flow(good_sent), (len(got), len(good_sent))


def test_truncated_to_an_ipv6_route_mtu_of_1280_never_fragmented(collector, capture):
    """IPv6's minimum MTU: a route of 1280 to the collector cuts the copies to fit (the kernel
    writes the outer IPv6 header and the UDP checksum), never a fragment header."""
    subprocess.run(["ip", "-6", "route", "add", f"{THEIRS6}/128", "dev", "mcol0", "mtu", "1280"], check=True)
    big = eth(0x0800, ipv4_udp(bytes(range(256)) * 20))
    small = eth(0x0800, ipv4_udp(b"s" * 100))
    frames = [big, small, big]
    cap = capture(collector.ns, collector.iface, extra=[*BIG, "ip6", "and", "host", THEIRS6])
    for spec in (f'{{ type = "erspan", remote = "{THEIRS6}", version = 3 }}',
                 f'{{ type = "geneve", remote = "{THEIRS6}", vni = 7 }}'):
        sink = _open(spec)
        try:
            st = _drain(sink, frames)
            (row,) = sink.collectors()
        finally:
            sink.release()
        assert st.packets == 3 and st.dropped_error == 0
        assert row["mtu"] == 1280 and row["truncated_mtu"] == 2
    _stop(cap, 6)
    got = _outers(cap.path)
    assert len(got) == 6
    for o, f in zip(got, frames * 2):
        assert o.ip_len <= 1280 and o.proto in (17, 47)  # 44 would be a fragment header
        if f is big:
            assert o.ip_len == 1280 and o.inner == f[:len(o.inner)] and len(o.inner) < len(f)
        else:
            assert o.inner == f
    for o, f in zip(got[:3], frames):
        assert _erspan_fields(o)["t"] == (f is big)
