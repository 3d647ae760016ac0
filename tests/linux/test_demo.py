"""`mirrord demo` (the README's main job): runs end to end and leaves nothing behind."""
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.root


def lab_namespaces():
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [ln.split()[0] for ln in out.splitlines() if ln.startswith("mrlab-")]


def test_demo_forwards_mirrors_and_tears_down():
    r = subprocess.run([sys.executable, "-m", "mirrord", "demo", "--count", "300"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "sink k0 received 300 of 300 frames" in out
    row = next(ln for ln in out.splitlines() if ln.startswith("a0->b0"))
    assert row.split()[1:] == ["300", "300", "0", "300", "300", "0"]
    lab = next(ln for ln in out.splitlines() if ln.startswith("lab "))
    assert lab.split()[:4] == ["lab", "tap:mirror0", "up", "300"]
    assert "10.99.0.1.40000 > 10.99.0.2.5000: UDP" in out  # tcpdump on mirror0
    assert out.rstrip().endswith("lab: torn down (namespaces, links, processes)")
    assert lab_namespaces() == []


def test_demo_tears_down_on_ctrl_c():
    p = subprocess.Popen([sys.executable, "-m", "mirrord", "demo", "--count", "100000"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if "sending" in line:
                break
        assert lab_namespaces(), "the lab should be up"
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, out + err
    assert "interrupted, tearing down" in err
    assert lab_namespaces() == []
