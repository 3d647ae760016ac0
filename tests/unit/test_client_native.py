"""The registration helper (native/src/client.c), built under ASan/UBSan: its msgpack
decoder on truncated, mutated and hostile replies, then the whole helper against a real
daemon (no root: the session's output is an interface that does not exist, so nothing is
created; the daemon counts the copies it could not deliver in dropped_no_output)."""
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from fixtures.daemon import DaemonProc
from fixtures.sessions import sid

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "native/tests/test_client.c",
           *(ROOT / "native/src" / f for f in ("tap.c", "ring.c", "guard.c"))]
CFLAGS = ["-std=gnu11", "-g", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{ROOT / 'native/include'}",
          "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]

SESSION = """
[[session]]
name = "c1"
input = ["eth1"]
rate = 7
output = { type = "interface", name = "mrcnone0" }
"""


@pytest.fixture(scope="module")
def exe(tmp_path_factory):
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    out = tmp_path_factory.mktemp("client") / "test_client"
    r = subprocess.run([cc, *CFLAGS, *map(str, SOURCES), "-lpcap", "-lpthread", "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out


def test_decoder_refuses_bad_replies(exe):
    r = subprocess.run([str(exe), "decode"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    assert r.stdout.rstrip().endswith("ok"), r.stdout
    m = re.search(r"mutated: (\d+) decoded, (\d+) refused", r.stdout)
    decoded, refused = int(m[1]), int(m[2])
    assert decoded > 0 and refused > 0


def _kv(line: str) -> dict:
    return dict(f.split("=", 1) for f in line.split()[1:])


def test_rule_and_register_against_the_daemon(exe, tmp_path):
    d = DaemonProc(tmp_path, SESSION).start()
    p = None
    try:
        p = subprocess.Popen([str(exe), "daemon", str(d.sock), "eth1", "1000"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = {}
        deadline = time.monotonic() + 30
        while "counters" not in lines and time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            lines[line.split()[0]] = line
        assert "counters" in lines, (lines, p.stderr.read() if p.poll() is not None else "")
        rule = _kv(lines["rule"])
        assert rule["session_id"] == str(sid(SESSION, "c1"))
        assert (rule["rate"], rule["run_length"], rule["max_len"], rule["generation"]) == ("7", "0", "0", "1")
        assert rule["instance"] == d.status()["instance"]
        assert "bad name: rc=-22" in lines["bad"] and '"name" must be 1-64' in lines["bad"]
        k = _kv(lines["counters"])
        # rate 7 over 1000 frames: k % 7 == 0 -> 143, all of them in the ring
        assert (k["seen"], k["sampled"], k["pushed"], k["dropped_ring_full"]) == ("1000", "143", "143", "0")

        st = d.wait_for(lambda s: s["sessions"][0]["counters"]["dropped_no_output"] >= 143,
                        what="the 143 copies drained")
        (ring,) = st["rings"]
        assert (ring["name"], ring["via"], ring["eventfd"]) == ("fd:ctest", "scm_rights", True)
        assert (ring["pushed_packets"], ring["dropped_ring_full"], ring["consumed_packets"]) == (143, 0, 143)
        c = st["sessions"][0]["counters"]
        assert (c["dropped_no_output"], c["mirrored_packets"]) == (143, 0)
    finally:
        if p is not None:
            p.stdin.close()
            p.wait(10)
            assert p.returncode == 0, p.stderr.read()
        d.stop()


def test_connect_errors(exe, tmp_path):
    r = subprocess.run([str(exe), "daemon", str(tmp_path / "nothing.sock"), "eth1", "1"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert f"connect to {tmp_path / 'nothing.sock'}: No such file or directory" in r.stderr
