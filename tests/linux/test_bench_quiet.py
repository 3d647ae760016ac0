"""bench/quiet.py runs briefly, measures every row it promises and leaves nothing behind.
Timings are never asserted: only that rows were measured (frames delivered, wake-ups and
delays counted) and that its namespace, tmpfs directory and processes are gone."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
RUN = re.compile(r"^quiet\.py: namespace (\S+), directory (\S+)$", re.M)
ROW = re.compile(r"^\| (on|off) \| (\S+(?: \(control\))?) \| (\d+) \| ([\d,]+) \| ([\d.]+) \| ([\d.]+) \(([\d.]+)-([\d.]+)\) \| "
                 r"([\d.]+) \| (\S+) \| (\S+) \| (.*)\|$")


def test_quiet_bench_measures_every_row_and_leaves_nothing():
    out = subprocess.run([sys.executable, str(ROOT / "bench/quiet.py"), "--rounds", "2", "--window", "0.1",
                          "--rates", "50000"], capture_output=True, text=True, timeout=300)
    m = RUN.search(out.stderr)
    assert m, out.stderr[-3000:]
    ns, work = m.groups()
    assert ns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not Path(work).exists()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = (Path("/proc") / pid / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        assert work not in cmd, f"left behind: {pid} {cmd}"
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {(r[0], r[1], int(r[2])): r for r in (m.groups() for m in map(ROW.match, out.stdout.splitlines()) if m)}
    want = {(s, "50k", n) for s in ("on", "off") for n in (1, 16, 64)} | {("on", "max", 1), ("off", "max", 1),
                                                                          ("on", "200k (control)", 64)}
    assert set(rows) == want, out.stdout
    for key, r in rows.items():
        assert int(r[3].replace(",", "")) > 0, (key, out.stdout)   # frames reached the TAP
        assert r[9] != "-" and r[10] != "-", (key, out.stdout)    # the daemon measured their delay
    # the daemon without coalescing is woken by its producer's eventfd writes (the
    # protocol at work), so the column counts something real
    assert float(rows[("off", "50k", 64)][8]) > 0, out.stdout
