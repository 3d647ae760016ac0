"""The missing-interface rule when the interface comes and goes: a pair that started late
(in a forwarder of its own) whose interface is deleted and made again (a new ifindex, as a
container restart does) must be forwarded again, and a pair whose interface never appears
costs one log line, not one per tick.

    src:s0 <-> a0:fwd:b0 <-> k0:sink        a0/s0 made, deleted, made again under the forwarder
"""
import time

import pytest
from test_forward import config, numbered
from test_missing_interface import late, wait  # noqa: F401  (the fixture)

pytestmark = pytest.mark.root


def _ifindex(lab, ns, dev):
    import json
    import subprocess

    out = subprocess.run(["ip", "-j", "-n", ns, "link", "show", dev], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)[0]["ifindex"]


def test_a_late_pair_whose_interface_is_made_again_is_forwarded_again(late, tmp_path):
    cfg = config(tmp_path, "")
    fwd = late.start_forwarder_waiting(cfg)
    late.link_a()
    run = tmp_path / "run"
    wait(lambda: not late.fwd_status(run, fwd.pid)["waiting"], "the pair started")
    frames = numbered(20)
    assert late.transfer(frames, late.src, "s0", late.sink, "k0") == frames
    first = _ifindex(late, late.fwd, "a0")

    import subprocess
    subprocess.run(["ip", "-n", late.src, "link", "del", "s0"], check=True)  # a0 goes with it
    time.sleep(1.0)  # a few of the forwarder's ticks without the interface
    late.link_a()
    assert _ifindex(late, late.fwd, "a0") != first
    deadline = time.monotonic() + 15
    got = []
    while time.monotonic() < deadline and got != frames:
        got = late.transfer(frames, late.src, "s0", late.sink, "k0", timeout=2.0)
    assert fwd.poll() is None, (tmp_path / "fwd.log").read_text()
    assert got == frames, f"{len(got)} of {len(frames)} forwarded after a0 came back"
    late.stop_forwarder(fwd)


def test_a_pair_that_never_appears_logs_once(late, tmp_path):
    cfg = config(tmp_path, "")
    fwd = late.start_forwarder_waiting(cfg)
    run = tmp_path / "run"
    for _ in range(3):  # several status ticks
        before = late.fwd_status(run, fwd.pid)
        time.sleep(0.6)
    assert before["waiting"] == [{"pair": "a0:b0", "missing": ["a0"], "error": None}]
    final = late.stop_forwarder(fwd)
    assert final["waiting"] == before["waiting"]
    log = (tmp_path / "fwd.log").read_text()
    assert log.count("event=pair_waiting") == 1, log
    assert "Traceback" not in log
