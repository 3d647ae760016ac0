"""Reload is all-or-nothing: either the new config is fully in force or the old one still
is, and systemd always sees READY=1 after RELOADING=1.  The real daemon under SIGHUP with a
fake NOTIFY_SOCKET, and the reload path in process (pytest-asyncio) for the rollbacks that
need an injected failure."""
import errno
import signal
import socket
import subprocess
import time

import pytest
from fixtures.sessions import S1, S2, sid

from mirrord.config import loads
from mirrord.ring import Producer
from mirrord.daemon.app import Daemon
from mirrord.sinks import TunSink

pytestmark = pytest.mark.root

FRAME = bytes.fromhex("020000000002020000000001") + b"\x88\xb5" + b"r" * 50


class Notifications:
    """The datagrams a daemon sends to its NOTIFY_SOCKET, as systemd would get them."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.path = path
        self.messages: list[list[str]] = []

    def wait(self, pred, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.messages.append(self.sock.recv(65536).decode().split("\n"))
            except TimeoutError:
                pass
            if pred():
                return
        raise AssertionError(f"not seen within {timeout}s; got {self.messages}")

    def firsts(self, start=0):
        """The state changes (READY, RELOADING, STOPPING) from message ``start`` on."""
        return [m[0] for m in self.messages[start:] if m[0] in ("READY=1", "RELOADING=1", "STOPPING=1")]


@pytest.fixture
def notify(tmp_path):
    n = Notifications(tmp_path / "notify.sock")
    yield n
    n.sock.close()


def _links():
    return {name for _, name in socket.if_nameindex()}


def _delivered(d, name):
    return d.session(name)["counters"]["mirrored_packets"]


def _refused_reload_keeps_delivering(d, notify, p, new_config, s1):
    """Push, reload by SIGHUP to ``new_config``, push again: returns the refusal reason."""
    for _ in range(100):
        assert p.push(FRAME, session_id=s1)
    d.wait_for(lambda st: _delivered(d, "s1") == 100, what="delivered before")
    n = len(notify.messages)
    d.write_config(new_config)
    d.proc.send_signal(signal.SIGHUP)
    st = d.wait_for(lambda st: st["last_reload_ok"] is False, what="reload refused")
    notify.wait(lambda: "READY=1" in notify.firsts(n))
    assert notify.firsts(n)[:2] == ["RELOADING=1", "READY=1"], notify.messages[n:]
    assert st["generation"] == 1 and [s["name"] for s in st["sessions"]] == ["s1"]
    assert st["sessions"][0]["output"] == {"type": "tap", "name": "mirror0", "open": True, "error": None,
                                           "opens": 1}
    for _ in range(100):
        assert p.push(FRAME, session_id=s1)
    st = d.wait_for(lambda st: _delivered(d, "s1") == 200, what="delivered after")
    c = st["sessions"][0]["counters"]
    assert c["dropped_no_output"] == c["dropped_sink_error"] == 0
    assert d.proc.poll() is None
    return st["last_reload_error"]


def test_reload_whose_new_output_cannot_be_made_keeps_the_old_one(daemon, notify):
    """s1's output moves to a TAP whose name a veth has (TUNSETIFF: EINVAL) and a new s2
    comes with it: nothing of the new config applies; s2's TAP, made first, is gone again."""
    subprocess.run(["ip", "link", "add", "taken0", "type", "veth", "peer", "name", "taken1"], check=True)
    d = daemon(S1, env={"NOTIFY_SOCKET": str(notify.path)})
    notify.wait(lambda: "READY=1" in notify.firsts())
    s1 = sid(S1, "s1")
    with Producer(d.run_dir / "a.ring", data_size=1 << 20) as p:
        d.wait_for(lambda st: len(st["rings"]) == 1, what="ring attached")
        # s2's TAP sorts first and is made before s1's new one fails
        bad = S2 + S1.replace('name = "mirror0"', 'name = "taken0"')
        why = _refused_reload_keeps_delivering(d, notify, p, bad, s1)
    assert why == (f'{d.cfg}: session "s1": output tap taken0: taken0 exists and is not a tap device; '
                   "the running config stays")
    links = _links()
    assert "mirror0" in links and "mirror1" not in links, links
    assert "event=reload_refused" in d.log.read_text()


def test_reload_with_a_nul_byte_in_an_output_name_is_refused_whole(daemon, notify):
    d = daemon(S1, env={"NOTIFY_SOCKET": str(notify.path)})
    notify.wait(lambda: "READY=1" in notify.firsts())
    s1 = sid(S1, "s1")
    with Producer(d.run_dir / "a.ring", data_size=1 << 20) as p:
        d.wait_for(lambda st: len(st["rings"]) == 1, what="ring attached")
        why = _refused_reload_keeps_delivering(d, notify, p, S1.replace('"mirror0"', '"lo\\u0000x"'), s1)
    assert why.startswith(f'{d.cfg}: session "s1": key "output.name": \'lo\\x00x\' is not a valid interface name')
    assert "Traceback" not in d.log.read_text()


# ---------------------------------------------------------------- in process

def _cfg(sessions):
    return loads(sessions, "test.toml")


async def test_reload_in_process_rolls_back_and_keeps_unchanged_outputs(netns, monkeypatch, make_veth):
    make_veth()  # mout0: an `interface` output that exists
    d = Daemon(_cfg(S1))
    await d.open_outputs(d.sessions)
    tap = d.sinks["s1"]
    assert tap.is_open, tap.error
    fd = tap.fd
    try:
        # 1. a new output that cannot be made: nothing changes, the new ones are closed
        subprocess.run(["ip", "link", "add", "taken0", "type", "veth", "peer", "name", "taken1"], check=True)
        bad = _cfg(S1 + S2 + '[[session]]\nname = "t"\ninput = ["eth9"]\noutput = { type = "tun", name = "taken0" }\n')
        ok, why = await d.reload(bad)
        assert not ok and why.startswith('test.toml: session "t": output tun taken0: ')
        assert (d.state.last_reload_ok, d.state.last_reload_error, d.generation) == (False, why, 1)
        assert list(d.sinks) == ["s1"] and d.sinks["s1"] is tap and tap.fd == fd
        assert "mirror1" not in _links()
        # 2. a good one: s1's output is unchanged, so its sink (and fd) stays; s2 opens;
        #    an `interface` output whose device is missing is not an error: it waits
        good = _cfg(S1 + S2 + '[[session]]\nname = "w"\ninput = ["eth8"]\n'
                              'output = { type = "interface", name = "later0" }\n')
        assert await d.reload(good) == (True, None)
        assert d.generation == 2 and d.sinks["s1"] is tap and tap.fd == fd
        assert d.sinks["s2"].is_open and "mirror1" in _links()
        assert not d.sinks["w"].is_open and d.sinks["w"].opens == 0  # not even tried
        assert d.sinks["w"].error == "interface later0: no such interface later0"
        # 3. s1's TAP becomes a TUN of the same name: the TAP must go first; when the TUN
        #    cannot be made (injected), the TAP is made again and the old config stays
        swap = _cfg(S1.replace('type = "tap"', 'type = "tun"') + S2)

        def refuse(self):
            raise OSError(errno.EBUSY, "injected")
        monkeypatch.setattr(TunSink, "open_blocking", refuse)
        ok, why = await d.reload(swap)
        assert not ok and "session \"s1\": output tun mirror0: injected" in why
        assert "(the outputs it replaced were opened again)" in why
        assert d.generation == 2 and d.sinks["s1"] is tap and tap.is_open and set(d.sinks) == {"s1", "s2", "w"}
        monkeypatch.undo()
        assert await d.reload(swap) == (True, None)
        assert d.generation == 3 and d.sinks["s1"].kind == "tun" and d.sinks["s1"].is_open
        assert set(d.sinks) == {"s1", "s2"} and d.sinks["s2"].is_open
    finally:
        await d._close_sinks()
    assert not any(k.is_open for k in d.sinks.values())
