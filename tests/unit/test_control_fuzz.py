"""The control socket against garbage: random bytes, random msgpack, wrong types, huge
lengths.  Every well-framed request gets one reply; the daemon never dies of one.

Runs the real daemon (no sessions, so no privileges needed) as a subprocess.
"""
import os
import socket
import struct

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures.daemon import DaemonProc

from mirrord.protocol import MAX_MESSAGE, ControlClient, encode


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    proc = DaemonProc(tmp_path_factory.mktemp("fuzz"), "").start()
    yield proc
    proc.stop()
    assert proc.proc.returncode == 0, proc.log.read_text()


def _raw(d, data: bytes, expect_reply: bool) -> dict | None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(str(d.sock))
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        buf = b""
        while chunk := s.recv(65536):
            buf += chunk
    finally:
        s.close()
    if not expect_reply:
        return None
    assert len(buf) >= 4
    (n,) = struct.unpack("!I", buf[:4])
    return msgpack.unpackb(buf[4:4 + n], raw=False)


def _still_alive(d):
    assert d.proc.poll() is None, d.log.read_text()
    assert d.request({"op": "status"})["ok"] is True


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text() | st.binary(),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8) | st.integers(-2**63, 2**63 - 1), kids, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=512))
def test_random_bytes_in_a_frame(d, body):
    r = _raw(d, struct.pack("!I", len(body)) + body, expect_reply=True)
    assert r["ok"] is False and isinstance(r["error"], str)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(obj=json_like)
def test_random_msgpack(d, obj):
    r = _raw(d, encode(obj) if isinstance(obj, dict) else
             struct.pack("!I", len(b := msgpack.packb(obj))) + b, expect_reply=True)
    assert r["ok"] is False
    assert r["error"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(op=json_like, path=json_like)
def test_wrong_types_for_known_keys(d, op, path):
    r = _raw(d, encode({"op": op, "path": path}), expect_reply=True)
    assert r["ok"] is False
    err = r["error"]
    assert err.startswith(("malformed msgpack", "register: ", '"op" must be a string', "unknown op"))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=64))
def test_random_unframed_bytes(d, raw):
    _raw(d, raw, expect_reply=False)  # whatever comes back, the daemon lives


def test_huge_length_is_refused_and_the_connection_closed(d):
    r = _raw(d, struct.pack("!I", 0xFFFFFFFF) + b"\x80", expect_reply=True)
    assert r == {"ok": False, "error": f"message of 4294967295 bytes is larger than {MAX_MESSAGE}"}
    r = _raw(d, struct.pack("!I", MAX_MESSAGE + 1), expect_reply=True)
    assert "larger than" in r["error"]


def test_known_ops_answer(d):
    with ControlClient(d.sock) as c:
        assert c.request({"op": "nope"}) == {
            "ok": False, "error": "unknown op 'nope' (expected status, config, reload, register)"}
        st_ = c.request({"op": "status"})["status"]
        assert st_["sessions"] == [] and st_["generation"] == 1
        cfg = c.request({"op": "config"})["config"]
        assert cfg["sessions"] == [] and cfg["interfaces"] == {}
        r = c.request({"op": "register", "path": "/etc/hostname"})
        assert r == {"ok": False, "error": f"register: /etc/hostname: not in the runtime directory {d.run_dir}"}
        missing = d.run_dir / "missing.ring"
        r = c.request({"op": "register", "path": str(missing)})
        assert r == {"ok": False, "error": f"register: {missing}: No such file or directory"}
        (d.run_dir / "adir.ring").mkdir()
        r = c.request({"op": "register", "path": str(d.run_dir / "adir.ring")})
        assert r["ok"] is False and r["error"].startswith("register: ")
        # the runtime-directory scan meets it too: refused and listed, the daemon goes on
        st = d.wait_for(lambda st: str(d.run_dir / "adir.ring") in st["ring_errors"], what="scan refusal")
        assert st["ring_errors"][str(d.run_dir / "adir.ring")].endswith(": a directory, not a regular file: refused")
        r = c.request({"op": "register", "path": "relative.ring"})
        assert r["ok"] is False and "absolute path" in r["error"]


def test_register_a_memfd_ring_with_scm_rights(d):
    from mirrord.ring import Producer

    with Producer(data_size=1 << 16) as p, ControlClient(d.sock) as c:
        r = c.request({"op": "register", "name": "memfd-q0"}, fds=[p.fd, p.eventfd])
        assert r == {"ok": True, "ring": "fd:memfd-q0"}
        for i in range(5):
            p.push(bytes([i]) * 64, session_id=77)  # no such session: counted, not lost
        st_ = d.wait_for(lambda s: any(x["name"] == "fd:memfd-q0" and x["consumed_packets"] == 5
                                       for x in s["rings"]), what="memfd ring drained")
        ring = next(x for x in st_["rings"] if x["name"] == "fd:memfd-q0")
        assert ring["eventfd"] is True and ring["dropped_no_session"] == 5
        # descriptors on an op that takes none, and too many, are refused
        assert c.request({"op": "status"}, fds=[p.fd])["error"] == "op 'status' takes no file descriptors"
    with ControlClient(d.sock) as c:
        r = c.request({"op": "register", "name": "x"}, fds=[0, 1, 2])
        assert r == {"ok": False, "error": "at most 2 file descriptors per message"}
    with ControlClient(d.sock) as c:
        r = c.request({"op": "register", "name": "a/b"}, fds=[0])
        assert "name" in r["error"]


def test_daemon_survived_everything(d):
    _still_alive(d)
    assert oct(os.stat(d.sock).st_mode & 0o777) == "0o660"


def _fds_request(d, msg, fds):
    with ControlClient(d.sock) as c:
        return c.request(msg, fds=fds)


def test_a_pipe_or_socket_as_the_eventfd_is_refused(d):
    """At EOF a pipe is readable for ever: the reader would spin at 100 % CPU."""
    from mirrord.ring import Producer

    with Producer(data_size=1 << 16) as p:
        r, w = os.pipe()
        a, b = socket.socketpair()
        try:
            os.close(w)  # the pipe at EOF, as a dead producer leaves it
            for fd, kind in ((r, "a pipe"), (a.fileno(), "a socket")):
                rep = _fds_request(d, {"op": "register", "name": "bad-efd"}, [p.fd, fd])
                assert rep == {"ok": False, "error": f"register: the second descriptor must be an eventfd, got {kind}"}
            # a pipe as the ring itself
            rep = _fds_request(d, {"op": "register", "name": "bad-ring"}, [r, p.eventfd])
            assert rep == {"ok": False, "error": "register: the first descriptor must be the ring "
                                                 "(a memfd or a regular file), got a pipe"}
        finally:
            os.close(r)
            a.close()
            b.close()
    st_ = d.status()
    assert not any(x["name"] in ("fd:bad-efd", "fd:bad-ring") for x in st_["rings"])


def test_a_nul_byte_in_a_path_gets_an_error_reply(d):
    for path in ("/x\x00y.ring", f"{d.run_dir}/a\x00.ring", "\x00"):
        r = _raw(d, encode({"op": "register", "path": path}), expect_reply=True)
        assert r["ok"] is False and r["error"].startswith('register: "path": '), r
    from mirrord.ring import Producer

    with Producer(data_size=1 << 16) as p:
        rep = _fds_request(d, {"op": "register", "path": f"{d.run_dir}/q\x00.ring"}, [p.fd, p.eventfd])
        assert rep == {"ok": False, "error": 'register: "path": contains a NUL byte'}
    _still_alive(d)
    assert "Traceback" not in d.log.read_text()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.text(max_size=40) | st.binary(max_size=40), name=json_like,
       nul_at=st.integers(0, 40), with_fds=st.booleans())
def test_register_with_hostile_paths_and_names_gets_one_error_reply(d, path, name, nul_at, with_fds):
    """Each malformed register gets exactly one reply (an error) and no traceback."""
    if isinstance(path, str):
        path = "/" + path[:nul_at] + "\x00" + path[nul_at:]
    msg = {"op": "register", "path": path, "name": name}
    if not with_fds:
        r = _raw(d, encode(msg), expect_reply=True)
    else:
        rfd, wfd = os.pipe()
        try:
            r = _fds_request(d, msg, [rfd, wfd])
        finally:
            os.close(rfd)
            os.close(wfd)
    assert r["ok"] is False and r["error"].startswith(("register: ", "malformed msgpack")), r


def test_no_traceback_after_the_fuzzing(d):
    assert "Traceback" not in d.log.read_text()
    assert "control_error" not in d.log.read_text()
