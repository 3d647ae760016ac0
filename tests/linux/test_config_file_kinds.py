"""Reload and check-config read the configuration file without looking at what it is.

`config.load` does `Path.read_text()` on the event loop.  A config path replaced by a FIFO
(an editor's or a deploy tool's mistake, `mkfifo` for a templating pipe) blocks the whole
daemon at the next SIGHUP: no drain, no status, no /healthz, no WATCHDOG=1 (under systemd
the watchdog then kills it; every ring fills meanwhile).  A symlink to /dev/zero makes the
loop read until memory runs out (here bounded with RLIMIT_AS so the machine survives).
Expected: a reload refused in one line ("not a regular file"), the running config kept,
the loop never blocked.
"""
import os
import signal
import subprocess
import sys
import time

import pytest
from fixtures.daemon import DaemonProc
from mirrord.protocol import ControlClient

pytestmark = pytest.mark.root

SESSION = '[[session]]\nname = "s"\ninput = ["in0"]\noutput = { type = "tap", name = "m0" }\n'


@pytest.fixture
def ns(netns):
    """The shared netns fixture (tests/fixtures/netns.py) under this file's name for it."""
    return netns


def status_within(d: DaemonProc, seconds: float):
    try:
        with ControlClient(d.sock, timeout=seconds) as c:
            return c.request({"op": "status"})
    except (TimeoutError, OSError) as e:
        return e


def test_sighup_with_the_config_replaced_by_a_fifo_blocks_the_daemon(tmp_path, ns):
    d = DaemonProc(tmp_path, SESSION, netns=ns).start()
    try:
        assert status_within(d, 3)["ok"]
        d.cfg.unlink()
        os.mkfifo(d.cfg)
        d.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        r = status_within(d, 3)
        blocked = not isinstance(r, dict)
        # unblock the reader so the daemon can be stopped (a writer that closes: EOF)
        if blocked:
            fd = os.open(d.cfg, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        log = d.log.read_text()
    finally:
        d.stop()
    assert not blocked, f"status got no answer within 3 s after SIGHUP with a FIFO as config: {r!r}"
    assert "reload_refused" in log


def test_check_config_on_a_fifo_never_returns(tmp_path):
    f = tmp_path / "cfg.toml"
    os.mkfifo(f)
    try:
        r = subprocess.run([sys.executable, "-m", "mirrord", "check-config", str(f)], capture_output=True,
                           text=True, timeout=3)
        hung = False
    except subprocess.TimeoutExpired:
        hung = True
    assert not hung, "mirrord check-config FIFO is still waiting after 3 s"
    assert r.returncode == 1


def test_sighup_with_the_config_a_symlink_to_dev_zero_reads_until_memory_runs_out(tmp_path, ns):
    # RLIMIT_AS bounds the damage to this daemon (without it, it takes the machine's memory)
    d = DaemonProc(tmp_path, SESSION, netns=ns, wrap=["prlimit", "--as=2000000000", "--"]).start()
    try:
        d.cfg.unlink()
        d.cfg.symlink_to("/dev/zero")
        d.proc.send_signal(signal.SIGHUP)
        d.wait_log("reload_", timeout=60)
        st = status_within(d, 5)
        log = d.log.read_text()
    finally:
        d.stop()
    print(st)
    assert "MemoryError" not in log, log[-1500:]
    assert "reload_refused" in log and "regular file" in log, log[-1500:]


def test_check_config_refuses_an_oversized_file_and_follows_a_symlink_to_a_regular_one(tmp_path):
    big = tmp_path / "big.toml"
    big.write_text("# padding\n" * ((1 << 20) // 10 + 1))  # comments only: valid TOML, just too big
    r = subprocess.run([sys.executable, "-m", "mirrord", "check-config", str(big)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1 and r.stderr.strip() == f"mirrord: {big}: cannot read: larger than 1048576 bytes", r.stderr
    real = tmp_path / "real.toml"
    real.write_text(f'[daemon]\nruntime_dir = "{tmp_path / "run"}"\n' + SESSION)
    link = tmp_path / "link.toml"
    link.symlink_to(real)  # admins do this (a deploy tool's current -> release): its target is judged
    r = subprocess.run([sys.executable, "-m", "mirrord", "check-config", str(link)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and "OK, 1 session" in r.stdout, r.stderr
    r = subprocess.run([sys.executable, "-m", "mirrord", "check-config", "/dev/zero"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1 and r.stderr.strip() == ("mirrord: /dev/zero: cannot read: not a regular file "
                                                      "(a character device)"), r.stderr
