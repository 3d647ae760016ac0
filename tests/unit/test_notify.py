"""systemd's notify protocol, seen from a fake NOTIFY_SOCKET that the test owns: the real
daemon sends READY=1 once it is up, WATCHDOG=1 periodically from its event loop,
RELOADING=1/READY=1 around a SIGHUP reload and STOPPING=1 on SIGTERM."""
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from fixtures.daemon import DaemonProc

from mirrord.sdnotify import Notifier


class FakeSystemd:
    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.path = path
        self.messages: list[list[str]] = []

    def collect(self, until, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.messages.append(self.sock.recv(4096).decode().split("\n"))
            except TimeoutError:
                pass
            if until(self.flat()):
                return
        raise AssertionError(f"not seen within {timeout}s; got {self.messages}")

    def flat(self) -> list[str]:
        return [line for m in self.messages for line in m]

    def close(self):
        self.sock.close()


@pytest.fixture
def fake_systemd(tmp_path):
    f = FakeSystemd(tmp_path / "notify.sock")
    yield f
    f.close()


def test_ready_watchdog_reload_stopping(tmp_path, fake_systemd):
    env = {"NOTIFY_SOCKET": str(fake_systemd.path), "WATCHDOG_USEC": "1000000"}  # ping every 0.5 s
    d = DaemonProc(tmp_path, "", env=env).start()
    try:
        fake_systemd.collect(lambda lines: lines.count("WATCHDOG=1") >= 3)
        first = fake_systemd.messages[0]
        assert first[0] == "READY=1" and first[1].startswith("STATUS=0 sessions, outputs open 0/0")
        assert "STOPPING=1" not in fake_systemd.flat()
        d.proc.send_signal(signal.SIGHUP)
        n = len(fake_systemd.messages)
        fake_systemd.collect(lambda _: any(m[0] == "READY=1" for m in fake_systemd.messages[n:]))
        later = [m[0] for m in fake_systemd.messages[n:] if m[0] != "WATCHDOG=1"]
        assert later[:2] == ["RELOADING=1", "READY=1"], fake_systemd.messages[n:]
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(10) == 0
        fake_systemd.collect(lambda lines: "STOPPING=1" in lines, timeout=2)
    finally:
        d.stop()
    pings = [m for m in fake_systemd.messages if m == ["WATCHDOG=1"]]
    assert len(pings) >= 3
    assert time.monotonic() - t0 < 10


def test_without_notify_socket_the_notifier_is_a_no_op():
    n = Notifier(environ={})
    assert not n.enabled and n.watchdog_s is None
    assert n.ready("x") is False and n.watchdog() is False


def test_watchdog_interval_follows_the_environment(tmp_path):
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "10000000"}).watchdog_s == 5.0
    # WATCHDOG_PID names another process (systemd meant the main PID): no pings from us
    other = str(os.getpid() + 1)
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "10", "WATCHDOG_PID": other}).watchdog_s is None
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "junk"}).watchdog_s is None


def test_abstract_socket_and_send_errors_never_raise(tmp_path):
    name = f"mirrord-test-{os.getpid()}"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(b"\0" + name.encode())
    srv.settimeout(2)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.ready("one\nline") is True
        assert srv.recv(4096) == b"READY=1\nSTATUS=one line"
    finally:
        srv.close()
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert gone.enabled and gone.watchdog() is False  # logged once, not raised
