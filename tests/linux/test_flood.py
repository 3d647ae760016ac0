"""Idle and half-sent clients cannot exhaust the daemon's descriptors or memory.

The daemon runs with a small RLIMIT_NOFILE (soft = hard = 256, so it cannot raise it) and
small caps; the test opens more idle connections than the caps to the HTTP port and to the
control socket (with partial 1 MiB messages), about as many as the daemon has descriptors
in all.  Status and /healthz must still answer, the TAP output keep delivering every copy,
the daemon close the idle ones within its timeout, its RSS stay bounded, and the output
never be closed and reopened (the flapping an EMFILE storm caused)."""
import contextlib
import json
import socket
import struct
import subprocess
import time

import pytest
from fixtures.frames import read_pcap
from fixtures.sessions import S1, sid

from mirrord.ring import Producer

pytestmark = pytest.mark.root

CAP = 16
TIMEOUT = 2.0
NOFILE = 256
LIMITS = f"control_max_connections = {CAP}\nhttp_max_connections = {CAP}\nclient_timeout = {TIMEOUT}\n"
FRAME = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + b"f" * 50


def _rss(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _open_flood(d, port, n):
    """n idle TCP connections to HTTP, n control connections with half a 1 MiB message."""
    conns = []
    for _ in range(n):
        s = socket.socket()
        s.settimeout(3)
        with contextlib.suppress(OSError):
            s.connect(("127.0.0.1", port))
            conns.append(s)
            continue
        s.close()
    partial = struct.pack("!I", 1 << 20) + b"\x81" * (512 << 10)
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX)
        end = time.monotonic() + 3
        while True:  # a non-blocking Unix connect fails with EAGAIN while the backlog is full
            try:
                s.connect(str(d.sock))
                break
            except BlockingIOError:
                if time.monotonic() > end:
                    break
                time.sleep(0.005)
        try:
            s.getpeername()
        except OSError:
            s.close()
            continue
        conns.append(s)
        s.setblocking(False)
        with contextlib.suppress(OSError):
            s.send(partial)
    return conns


def _closed_by_peer(s, deadline):
    s.settimeout(max(0.05, deadline - time.monotonic()))
    try:
        while s.recv(65536):
            pass  # an error reply, then EOF
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except OSError:  # timed out: still open
        return False


def _retry(fn, seconds):
    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except (OSError, ConnectionError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _push_and_wait(d, p, s1, n, before):
    for i in range(n):
        assert p.push(FRAME, session_id=s1)
        if i % 20 == 19:
            time.sleep(0.002)  # paced, so that tcpdump keeps up (the ring would not drop)
    return d.wait_for(lambda st: st["sessions"][0]["counters"]["mirrored_packets"] == before + n,
                      timeout=20, what=f"{before + n} copies mirrored")


def test_idle_and_partial_clients_do_not_starve_the_daemon(daemon, netns, capture):
    port = 9469
    d = daemon(LIMITS + S1, http=f"127.0.0.1:{port}", nofile=NOFILE)
    pid = d.proc.pid
    s1 = sid(S1, "s1")
    log = d.log.read_text()
    assert "event=nofile limit=256" in log
    cap = capture(netns, "mirror0")
    with Producer(d.run_dir / "a.ring", data_size=1 << 20) as p:
        d.wait_for(lambda st: len(st["rings"]) == 1, what="ring attached")
        _push_and_wait(d, p, s1, 100, 0)
        rss0 = _rss(pid)
        flood = _open_flood(d, port, CAP + 150)
        try:
            assert len(flood) > NOFILE, len(flood)  # more than the daemon has fds for
            t_flood = time.monotonic()
            # the daemon answers, and its output goes on delivering, during the flood
            st = _retry(d.status, 3 * TIMEOUT)
            assert st["sessions"][0]["output"]["open"] is True
            code, body = _retry(lambda: d.http_get("/healthz"), 3 * TIMEOUT)
            assert code == 200, body
            _push_and_wait(d, p, s1, 500, 100)
            rss_peak = _rss(pid)
            # every flooding connection is closed by the daemon: at once over the caps, the
            # rest when idle (or their message unfinished) for TIMEOUT seconds
            deadline = t_flood + TIMEOUT + 5
            still_open = [s for s in flood if not _closed_by_peer(s, deadline)]
            assert still_open == []
        finally:
            for s in flood:
                s.close()
        # after the flood: answers at once, delivers, and never closed the output
        assert d.status()["sessions"][0]["output"]["open"] is True
        assert d.http_get("/healthz")[0] == 200
        st = _push_and_wait(d, p, s1, 400, 600)
        time.sleep(1.0)  # a flapping output would show by now
        st = d.status()
        cap.stop()
        link = json.loads(subprocess.run(["ip", "-n", netns, "-j", "-s", "link", "show", "mirror0"],
                                         capture_output=True, text=True, check=True).stdout)
        rx = link[0]["stats64"]["rx"]["packets"]
    c = st["sessions"][0]["counters"]
    assert c["mirrored_packets"] == 1000 and c["dropped_no_output"] == 0 and c["dropped_sink_error"] == 0
    assert st["rings"][0]["dropped_ring_full"] == 0
    # the kernel's count of frames the TAP took from the daemon is exact; tcpdump may lose
    # some under a loaded machine, but what it captured is the original frame
    assert rx == 1000
    _, got = read_pcap(cap.path)
    assert got and all(g == FRAME for g in got)
    log = d.log.read_text()
    for event in ("output_gone", "output_back", "sink_unavailable", "Too many open files", "Traceback"):
        assert event not in log, log
    assert "event=control_busy" in log and "event=http_busy" in log
    # unfinished control input is bounded (8 MiB in all), not 116 x 512 KiB
    assert rss_peak - rss0 < 32 << 20, (rss0, rss_peak)
    assert d.proc.poll() is None
