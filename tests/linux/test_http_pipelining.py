"""HTTP clients that send but never read: is the daemon's memory bounded per client?

Issue 13 (6) capped connections and idle/head time.  A client that pipelines many small
requests (`GET /healthz`, 37 bytes each) on one connection and never reads the replies
sends well within `client_timeout`; aiohttp parses every pipelined head into a queued
message object as the bytes arrive, and the replies it cannot write pile up in the
transport.  The daemon runs under RLIMIT_AS here so the machine survives.
"""
import socket
import time

import pytest
from fixtures.daemon import DaemonProc

pytestmark = pytest.mark.root
SESSION = '[[session]]\nname = "s"\ninput = ["in0"]\noutput = { type = "tap", name = "m0" }\n'


@pytest.fixture
def ns(netns):
    """The shared netns fixture (tests/fixtures/netns.py) under this file's name for it."""
    return netns


def rss_mib(pid: int) -> int:
    return int(next(line for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS")).split()[1]) // 1024


@pytest.mark.parametrize("kind", ["pipelined", "headers"])
def test_one_client_that_never_reads(tmp_path, ns, kind):
    d = DaemonProc(tmp_path, SESSION, netns=ns, wrap=["prlimit", "--as=4000000000", "--"]).start()
    try:
        pid = d.proc.pid
        before = rss_mib(pid)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(d.http)
        s.settimeout(0.5)
        if kind == "pipelined":
            chunk = b"GET /healthz HTTP/1.1\r\nHost: m\r\n\r\n" * 4096
        else:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: m\r\n")
            chunk = b"X-a: b\r\n" * 16384
        sent = 0
        peak = before
        end = time.monotonic() + 3.0  # within client_timeout (5 s)
        while time.monotonic() < end and sent < (200 << 20):
            try:
                sent += s.send(chunk)
            except (socket.timeout, BlockingIOError):
                pass
            except OSError:
                break
            peak = max(peak, rss_mib(pid))
        alive = d.proc.poll() is None
        ok = d.http_get("/healthz")[0] == 200 if alive else None  # answers others meanwhile
        s.close()
        time.sleep(0.5)
        after = rss_mib(pid) if alive else None
    finally:
        d.stop()
    print(f"{kind}: sent {sent >> 10} KiB in 3 s; daemon RSS {before} -> peak {peak} MiB (after close {after})")
    assert alive and ok, (alive, ok)  # alive, and /healthz answered another client during the flood
    assert peak - before < 64, f"one client grew the daemon by {peak - before} MiB by sending {sent >> 20} MiB"
