"""The daemon's logic in process, no root: reload (applied, refused, all-or-nothing), the
session table, and the folding of per-ring counters into per-session totals.

Real parts: rings are mirrord.ring Producers on memfds handed over as with SCM_RIGHTS
(``register_fds``), drained by the daemon's own readers on the running event loop; each
session's output is one end of a socketpair, so the test reads exactly the bytes the
drain wrote.  Only the choice of sink class is replaced (TAP/TUN need root)."""
from __future__ import annotations

import asyncio
import errno
import os
import socket

import pytest

import mirrord.daemon.app as appmod
import mirrord.daemon.sessions as sessmod
from mirrord.config import loads
from mirrord.daemon import Daemon
from mirrord.ring import DRAIN_WRITE, Producer
from mirrord.sinks import Sink

FRAME = bytes.fromhex("020000000002020000000001") + b"\x88\xb5"


class PairSink(Sink):
    """An output on a socketpair: the daemon writes one end, the test reads the other.
    Outputs named ``bad*`` cannot be opened (EBUSY), like a TUN whose name is taken."""

    kind = "tap"
    mode = DRAIN_WRITE
    peers: dict[str, socket.socket] = {}

    def open_blocking(self) -> int:
        if self.name.startswith("bad"):
            raise OSError(errno.EBUSY, "injected")
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        theirs.setblocking(False)
        old = PairSink.peers.pop(self.name, None)
        if old is not None:
            old.close()
        PairSink.peers[self.name] = theirs
        return mine.detach()


def received(output: str) -> list[bytes]:
    out = []
    with_peer = PairSink.peers[output]
    while True:
        try:
            out.append(with_peer.recv(65536))
        except BlockingIOError:
            return out


def session(name: str, output: str, inp: str) -> str:
    return f'[[session]]\nname = "{name}"\ninput = ["{inp}"]\noutput = {{ type = "tap", name = "{output}" }}\n'


S1 = session("s1", "m1", "eth1")
S2 = session("s2", "m2", "eth2")


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.setattr(sessmod, "sink_for", lambda o: PairSink(o.name))
    monkeypatch.setattr(appmod, "sink_for", lambda o: PairSink(o.name))
    yield lambda text: loads(f'[daemon]\nruntime_dir = "{tmp_path}"\n' + text, "test.toml")
    for s in PairSink.peers.values():
        s.close()
    PairSink.peers.clear()


@pytest.fixture
async def daemon(cfg):
    made = []

    async def make(text: str) -> Daemon:
        d = Daemon(cfg(text))
        await d.open_outputs(d.sessions)
        made.append(d)
        return d
    yield make
    for d in made:
        d.rings.close()
        await d._close_sinks()


def ring(d: Daemon, name: str) -> tuple[Producer, object]:
    p = Producer(data_size=1 << 16, name=name)
    return p, d.register_fds(name, p.fd, p.eventfd)


def sid(d: Daemon, name: str) -> int:
    return d.sessions[name].config.id


async def settle(d: Daemon, want: dict[str, int]) -> dict[str, dict[str, int]]:
    """The per-session counters once each session named in ``want`` has mirrored that many
    packets (the readers drain on the loop, woken by the rings' eventfds); bounded."""
    for _ in range(200):
        st = {s["name"]: s["counters"] for s in d.status()["sessions"]}
        if all(st[n]["mirrored_packets"] >= k for n, k in want.items()):
            return st
        await asyncio.sleep(0.01)
    raise AssertionError(f"not drained: {st} (want {want})")


def dropped(c: dict[str, int]) -> int:
    return c["dropped_no_output"] + c["dropped_sink_busy"] + c["dropped_sink_error"] + c["dropped_not_ip"]


async def test_rings_drain_into_each_sessions_output(daemon):
    d = await daemon(S1 + S2)
    p, r = ring(d, "a")
    with p:
        for i in range(5):
            assert p.push(FRAME + bytes([i]) * 40, session_id=sid(d, "s1"))
        for i in range(3):
            assert p.push(FRAME + b"x" * (60 + i), session_id=sid(d, "s2"))
        st = await settle(d, {"s1": 5, "s2": 3})
        assert [len(b) for b in received("m1")] == [54] * 5
        assert received("m2") == [FRAME + b"x" * (60 + i) for i in range(3)]
        assert st["s1"]["mirrored_bytes"] == 5 * 54 and st["s2"]["mirrored_bytes"] == 3 * len(FRAME) + 60 + 61 + 62
        assert dropped(st["s1"]) == dropped(st["s2"]) == 0
        ring_st = d.status()["rings"][0]
        assert (ring_st["name"], ring_st["via"], ring_st["pushed_packets"], ring_st["consumed_packets"]) == \
            ("fd:a", "scm_rights", 8, 8)


async def test_session_state_is_one_object_per_session(daemon):
    d = await daemon(S1 + S2)
    s1, s2 = d.sessions["s1"], d.sessions["s2"]
    assert (s1.slot, s2.slot) == (0, 1)
    assert d.sessions.by_output["m2"] is s2 and d.sinks == {"s1": s1.sink, "s2": s2.sink}
    assert s1.sink.is_open and s1.route() == (s1.config.id, s1.sink.fd, DRAIN_WRITE)
    # the output goes: every reader's route of that session takes -1, copies count as no_output
    p, r = ring(d, "a")
    with p:
        fd = d.release_sink(s1, "test")
        os.close(fd)
        assert not s1.sink.is_open and s1.sink.error == "test"
        assert p.push(FRAME, session_id=s1.config.id) and p.push(FRAME, session_id=s2.config.id)
        st = await settle(d, {"s2": 1})
        for _ in range(100):
            if d.status()["sessions"][0]["counters"]["dropped_no_output"] == 1:
                break
            await asyncio.sleep(0.01)
        assert d.status()["sessions"][0]["counters"] == {**st["s1"], "dropped_no_output": 1}
        ok, why = d.health.readiness()
        assert not ok and why["sessions"]["s1"] == "output tap m1: test" and why["sessions"]["s2"] == "ok"
        # back: the session's retry is cleared and the reader routes to the new fd
        s1.retry = (0.0, 5.0)
        await d.open_outputs([s1], "output_back")
        assert s1.retry is None and s1.sink.is_open
        assert p.push(FRAME + b"back", session_id=s1.config.id)
        await settle(d, {"s1": 1})
        assert received("m1") == [FRAME + b"back"]


async def test_counters_fold_across_reload_and_detach(daemon, cfg):
    d = await daemon(S1 + S2)
    p, r = ring(d, "a")
    with p:
        for _ in range(4):
            p.push(FRAME, session_id=sid(d, "s1"))
        p.push(FRAME, session_id=sid(d, "s2"))
        await settle(d, {"s1": 4, "s2": 1})
        assert received("m2") == [FRAME]  # (its output closes with the reload below)
        # reload to s1 only: s1's counters carry on, s2's are set aside (not in status)
        assert await d.reload(cfg(S1)) == (True, None)
        assert d.generation == 2 and [s["name"] for s in d.status()["sessions"]] == ["s1"]
        assert d.sessions["s1"].retired.mirrored_packets == 4  # folded from the old table
        for _ in range(2):
            p.push(FRAME, session_id=sid(d, "s1"))
        p.push(FRAME, session_id=999)  # no session has this id: counted per ring (no_session)
        st = await settle(d, {"s1": 6})
        assert st["s1"]["mirrored_packets"] == 6 and st["s1"]["mirrored_bytes"] == 6 * len(FRAME)
        # s2 comes back under its name: its counters resume where they were
        assert await d.reload(cfg(S1 + S2)) == (True, None)
        p.push(FRAME, session_id=sid(d, "s2"))
        st = await settle(d, {"s1": 6, "s2": 2})
        assert st["s2"]["mirrored_packets"] == 2
        unrouted = d.status()["rings"][0]["dropped_no_session"]
        # the ring is detached: what its table counted stays in the sessions' totals
        d.rings.detach(r, "test")
        assert len(d.rings) == 0
        st = {s["name"]: s["counters"] for s in d.status()["sessions"]}
        assert (st["s1"]["mirrored_packets"], st["s2"]["mirrored_packets"]) == (6, 2)
        # every copy accounted for: sampled = delivered + dropped, over sessions and the ring
        k = p.counters()
        assert k.pushed_packets == 9 == 6 + 2 + unrouted
    assert received("m1") == [FRAME] * 6 and received("m2") == [FRAME]  # a new m2 since the reload


async def test_reload_refused_keeps_everything(daemon, cfg, caplog):
    d = await daemon(S1)
    s1 = d.sessions["s1"]
    sink, fd = s1.sink, s1.sink.fd
    p, r = ring(d, "a")
    with p:
        p.push(FRAME, session_id=s1.config.id)
        await settle(d, {"s1": 1})
        # all or nothing: m2 opens, bad0 cannot; m2 is closed again and nothing changes
        ok, why = await d.reload(cfg(S1 + S2 + session("t", "bad0", "eth9")))
        assert not ok
        assert why == ('test.toml: session "t": output tap bad0: injected; the running config stays')
        assert (d.state.last_reload_ok, d.state.last_reload_error, d.generation) == (False, why, 1)
        assert list(d.sinks) == ["s1"] and d.sessions["s1"] is s1 and s1.sink is sink and sink.fd == fd
        assert "event=reload_refused" in caplog.text
        peer = PairSink.peers["m2"]  # the output the refused config opened is closed again
        with pytest.raises(ConnectionRefusedError):
            peer.send(b"x")
        # a [daemon] change needs a restart: refused with the key named
        bad = loads(f'[daemon]\nruntime_dir = "{d.config.daemon.runtime_dir}"\nmax_ring_size = 65536\n' + S1,
                    "test.toml")
        ok, why = await d.reload(bad)
        assert not ok and why == 'test.toml: [daemon]: key "max_ring_size": changes need a restart'
        # the running config still delivers, into the same output
        p.push(FRAME + b"after", session_id=s1.config.id)
        st = await settle(d, {"s1": 2})
        assert received("m1")[-1] == FRAME + b"after" and dropped(st["s1"]) == 0
        assert d.status()["last_reload_ok"] is False
        # and a good reload after it is applied, keeping the unchanged output's sink
        assert await d.reload(cfg(S1 + S2)) == (True, None)
        assert d.generation == 2 and d.sessions["s1"].sink is sink and sink.fd == fd
        assert d.status()["last_reload_ok"] is True and d.status()["last_reload_error"] is None
