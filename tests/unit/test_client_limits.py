"""Per-client bounds of the control socket and the HTTP endpoints, on the real daemon (no
sessions, so no privileges needed): a cap on connections, idle and unfinished-message
timeouts, each with its reply."""
import socket
import struct
import time

import msgpack
import pytest

from fixtures.daemon import DaemonProc

from mirrord.protocol import encode

TIMEOUT = 0.5


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    proc = DaemonProc(tmp_path_factory.mktemp("limits"),
                      f"control_max_connections = 2\nhttp_max_connections = 2\nclient_timeout = {TIMEOUT}\n").start()
    yield proc
    proc.stop()
    assert proc.proc.returncode == 0, proc.log.read_text()


def _connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT + 5)
    s.connect(str(path))
    return s


def _read_to_eof(s):
    buf = b""
    try:
        while chunk := s.recv(65536):
            buf += chunk
    except ConnectionResetError:
        pass
    return buf


def _reply(buf):
    (n,) = struct.unpack("!I", buf[:4])
    return msgpack.unpackb(buf[4:4 + n], raw=False)


def test_idle_control_clients_are_closed_and_the_excess_refused(d):
    time.sleep(0.2)  # the start-up probe's connection is gone
    a, b = _connect(d.sock), _connect(d.sock)
    try:
        for s in (a, b):  # both admitted: each answers a request, then idles
            s.sendall(encode({"op": "config"}))
            assert _reply(s.recv(65536))["ok"] is True
        c = _connect(d.sock)
        assert _reply(_read_to_eof(c)) == {"ok": False, "error": "too many control connections (at most 2); try again"}
        c.close()
        t0 = time.monotonic()
        assert _read_to_eof(a) == b"" and _read_to_eof(b) == b""  # closed, nothing asked: no reply
        assert time.monotonic() - t0 < TIMEOUT + 4
    finally:
        a.close()
        b.close()
    assert d.request({"op": "status"})["ok"] is True


def test_an_unfinished_control_message_times_out_with_a_reply(d):
    s = _connect(d.sock)
    try:
        s.sendall(struct.pack("!I", 1000) + b"\x81" * 10)
        assert _reply(_read_to_eof(s)) == {"ok": False, "error": f"message not complete within {TIMEOUT:g}s "
                                                                  "(14 bytes received)"}
    finally:
        s.close()


def test_a_slow_client_is_closed_even_while_it_trickles(d):
    """The time limit is for the whole message, not between bytes."""
    s = _connect(d.sock)
    try:
        s.sendall(struct.pack("!I", 100))
        s.settimeout(0.1)
        got = b""
        for _ in range(int((TIMEOUT + 4) / 0.1)):  # one byte every 0.1 s never completes it
            try:
                s.send(b"\x81")
                got = s.recv(65536)
                break  # the daemon spoke (its error reply)
            except socket.timeout:
                continue
            except OSError:
                break
        s.settimeout(5)
        got += _read_to_eof(s)
        r = _reply(got)
        assert r["ok"] is False and r["error"].startswith(f"message not complete within {TIMEOUT:g}s")
    finally:
        s.close()


def test_idle_and_half_sent_http_clients_are_closed(d):
    idle, half = _connect(d.http), _connect(d.http)
    try:
        half.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # no blank line: the head never ends
        time.sleep(0.1)
        extra = _connect(d.http)  # over the cap of 2: closed at once
        assert _read_to_eof(extra) == b""
        extra.close()
        assert _read_to_eof(idle) == b"" and _read_to_eof(half) == b""
    finally:
        idle.close()
        half.close()
    code, body = d.http_get("/healthz")
    assert code == 200, body
