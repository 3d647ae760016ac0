"""`mirrord ring-stat`: what an operator sees of a ring, and one-line errors."""
import json
import subprocess
import sys

from mirrord.ring import Consumer, Producer


def run(*args):
    return subprocess.run([sys.executable, "-m", "mirrord", *args], capture_output=True, text=True)


def test_ring_stat_shows_counters_without_attaching(tmp_path):
    path = tmp_path / "eth1-q0.ring"
    with Producer(path, data_size=1 << 16, max_frame=2048) as p, Consumer(p.fd) as c:
        for _ in range(70):
            p.push(b"\x55" * 1000)  # 1040-byte records: 63 fit in 64 KiB, 7 dropped
        c.records(budget=11)
        r = run("ring-stat", "--json", str(path))
        assert r.returncode == 0, r.stderr
        k = json.loads(r.stdout)[str(path)]
        assert (k["offered"], k["pushed_packets"], k["dropped_ring_full_packets"]) == (70, 63, 7)
        assert k["consumed_packets"] == 11
        assert k["attaches"] == 1  # ring-stat did not attach
        table = run("ring-stat", str(path)).stdout.splitlines()
        assert table[0].split()[:5] == ["ring", "offered", "pushed", "ring_full", "consumed"]
        assert table[1].split()[:5] == ["eth1-q0.ring", "70", "63", "7", "11"]


def test_ring_stat_errors_are_one_line_each(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x00" * 8192)
    r = run("ring-stat", str(junk), str(tmp_path / "missing"))
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert lines == [
        f"mirrord: {junk}: not a mirrord ring: magic 0x0000000000000000, expected 0x31474e495252524d",
        f"mirrord: {tmp_path / 'missing'}: No such file or directory",
    ]
