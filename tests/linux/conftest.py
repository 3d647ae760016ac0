"""Fixtures for tests with real namespaces, devices and captures (root only).

Every test runs inside a network namespace it created (``netns``), so devices, traffic
and addresses stay there; teardown deletes the namespace and everything in it, also on
failure.
"""
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest


@pytest.fixture
def netns():
    """A fresh network namespace that the calling thread has entered; yields its name."""
    from pyroute2 import netns as pnetns

    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    name = f"mrt-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        pnetns.pushns(name)
        try:
            subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
            yield name
        finally:
            pnetns.popns()
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


class Capture:
    """tcpdump -w into a pcap inside a namespace; started and ready before traffic."""

    def __init__(self, ns: str, iface: str, path: Path, extra=()):
        self.path = path
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "tcpdump", "-i", iface, "--immediate-mode", "-U", "-n", "-s", "0",
             "-w", str(path), *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if "listening on" in line or not line:
                break
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"tcpdump did not start on {iface}: {line!r}")

    def stop(self, settle: float = 0.3) -> None:
        time.sleep(settle)
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def capture(tmp_path):
    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump is not installed")
    caps = []

    def start(ns, iface, name="cap.pcap", extra=()):
        c = Capture(ns, iface, tmp_path / name, extra)
        caps.append(c)
        return c

    yield start
    for c in caps:
        if c.proc.poll() is None:
            c.proc.kill()
            c.proc.wait()


@pytest.fixture
def daemon(tmp_path, netns):
    """A factory for the real daemon running inside the test's namespace; stopped after."""
    from fixtures.daemon import DaemonProc

    procs = []

    def start(sessions_text: str, **kw):
        d = DaemonProc(tmp_path, sessions_text, netns=netns, **kw).start()
        procs.append(d)
        return d

    yield start
    for d in procs:
        d.stop()
