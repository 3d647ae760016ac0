"""The embeddable tap as an outside user gets it: `make install-lib PREFIX=<tmp>`, the
example program (native/examples/tap_demo.c) built against the INSTALLED library with
`pkg-config --cflags --libs mirrord`, its ring in a running daemon's runtime directory;
tcpdump on the daemon's TAP reads back exactly the frames the rule picks, byte-identical
(multi-fragment frames gathered, a 9014-byte jumbo), and the counters add up."""
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from fixtures.frames import read_pcap
from fixtures.sessions import S1, sid

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]


def frame(i: int) -> bytes:
    """Frame i exactly as tap_demo.c builds it."""
    n = 9014 if i % 100 == 5 else 60 + (i * 37) % 1455
    head = bytes([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x88, 0xB5]) + struct.pack("!I", i)
    return head + bytes((i + j) & 0xFF for j in range(18, n))


@pytest.fixture(scope="module")
def tap_demo(tmp_path_factory) -> tuple[Path, dict]:
    """tap_demo built as an outside user would, against the library installed in a prefix."""
    for tool in ("make", "cc", "pkg-config"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    tmp = tmp_path_factory.mktemp("embed")
    prefix = tmp / "prefix"
    r = subprocess.run(["make", "-s", "-C", str(ROOT), "install-lib", f"PREFIX={prefix}", f"LIB={tmp / 'build'}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    env = {**os.environ, "PKG_CONFIG_PATH": str(prefix / "lib" / "pkgconfig")}
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "mirrord"], env=env, capture_output=True,
                           text=True, check=True).stdout.split()
    assert f"-I{prefix}/include" in flags and "-lmirrord" in flags, flags
    exe = tmp / "tap_demo"
    # a copy outside the tree: only the installed headers can be found
    src = tmp / "tap_demo.c"
    shutil.copy(ROOT / "native" / "examples" / "tap_demo.c", src)
    r = subprocess.run(["cc", "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", str(src), *flags, "-o", str(exe)],
                       capture_output=True, text=True, cwd=tmp)
    assert r.returncode == 0, r.stderr
    run_env = {"LD_LIBRARY_PATH": str(prefix / "lib")}
    ldd = subprocess.run(["ldd", str(exe)], env={**os.environ, **run_env}, capture_output=True, text=True).stdout
    assert f"{prefix}/lib/libmirrord.so.0" in ldd, ldd
    return exe, run_env


@pytest.mark.parametrize("rate,total,max_len", [(1, 120, 0), (7, 1000, 0), (3, 300, 1000)])
def test_installed_tap_demo_frames_reach_the_daemons_tap_identical(tap_demo, daemon, netns, capture,
                                                                  rate, total, max_len):
    exe, run_env = tap_demo
    d = daemon(S1)
    s1 = sid(S1, "s1")
    subprocess.run(["ip", "link", "set", "mirror0", "mtu", "9000"], check=True)
    cap = capture(netns, "mirror0", extra=("-B", "65536"))
    ring = d.run_dir / "demo-q0.ring"
    proc = subprocess.Popen([str(exe), str(ring), str(s1), str(rate), str(total), str(max_len)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **run_env})
    try:
        assert proc.stdout.readline().split() == ["ready", str(ring)]
        d.wait_for(lambda st: len(st["rings"]) == 1, what="ring attached")
        proc.stdin.write("go\n")
        proc.stdin.flush()
        c = dict(kv.split("=") for kv in proc.stdout.readline().split())
        c = {k: int(v) for k, v in c.items()}
        want = [i for i in range(total) if i % rate == 0]  # k % N == 0, k from 0
        assert c == {"seen": total, "sampled": len(want), "pushed": len(want), "dropped_ring_full": 0,
                     "dropped_no_ring": 0, "dropped_ring_lost": 0, "rule_generation": 1}
        st = d.wait_for(lambda st: st["sessions"][0]["counters"]["mirrored_packets"] == len(want),
                        what="every copy delivered")
        cap.stop()
        proc.stdin.close()
        assert proc.wait(10) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    expected = [frame(i)[:max_len] if max_len else frame(i) for i in want]
    if rate == 7 and total == 1000:
        assert len(expected) == 143
    assert any(len(f) == 9014 for f in expected) == (max_len == 0)
    assert st["sessions"][0]["counters"]["mirrored_bytes"] == sum(len(f) for f in expected)
    assert st["rings"][0]["pushed_packets"] == st["rings"][0]["consumed_packets"] == len(want)
    _, got = read_pcap(cap.path)
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"frame {want[i]} ({len(e)} bytes) differs on the TAP ({len(g)} bytes)"
