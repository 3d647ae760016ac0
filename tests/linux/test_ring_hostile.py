"""Hostile and broken ring files (issue 13, points 1, 2, 3 and 8): truncated under the
daemon and under the forwarder, a full runtime filesystem, symbolic links, FIFOs, files of
other users, sparse giants.  Each test shows what an operator sees: the process alive,
frames still forwarded and mirrored, one log line with the reason, status saying so."""
import json
import os
import signal
import subprocess
import threading
import time
import uuid

import pytest
from fixtures.sessions import S1, sid

from mirrord.ring import HEADER_SIZE, Producer

pytestmark = pytest.mark.root

FRAME = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + b"p" * 50


def _mirrored(st):
    return st["sessions"][0]["counters"]["mirrored_packets"]


def _push(p, n, session_id):
    return sum(p.push(FRAME, session_id=session_id) for _ in range(n))


# ------------------------------------------------------------------ 1: truncated, daemon side


def test_daemon_survives_a_truncated_ring_detaches_it_and_keeps_draining_the_others(daemon):
    # faulthandler on in the daemon too (it hooks SIGBUS): the guard must chain past it
    d = daemon(S1, env={"PYTHONFAULTHANDLER": "1"})
    s1 = sid(S1, "s1")
    a_path, b_path = d.run_dir / "a.ring", d.run_dir / "b.ring"
    with Producer(a_path, data_size=1 << 20) as a, Producer(b_path, data_size=1 << 20) as b:
        d.wait_for(lambda st: len(st["rings"]) == 2, what="both rings attached")
        assert _push(a, 100, s1) == 100 and _push(b, 100, s1) == 100
        d.wait_for(lambda st: _mirrored(st) == 200, what="200 mirrored")
        # traffic on b the whole time a is truncated under the daemon
        stop, pushed_b = threading.Event(), [0]

        def pusher():
            while not stop.is_set():
                pushed_b[0] += _push(b, 20, s1)
                time.sleep(0.002)

        t = threading.Thread(target=pusher)
        t.start()
        try:
            time.sleep(0.2)
            os.truncate(a_path, 0)
            # this very process maps it too (pytest's faulthandler is on): lost, not dead
            assert not a.push(FRAME, session_id=s1) and a.lost
            log = d.wait_log("event=ring_lost ring=a.ring")
            time.sleep(0.3)
        finally:
            stop.set()
            t.join()
        assert d.proc.poll() is None
        line = next(ln for ln in log.splitlines() if "event=ring_lost" in ln)
        assert f"reason='file truncated to 0 of {HEADER_SIZE + (1 << 20)} bytes'" in line
        st = d.wait_for(lambda st: _mirrored(st) == 200 + pushed_b[0], what="b drained to the last copy")
        assert [r["name"] for r in st["rings"]] == ["b.ring"]
        assert st["ring_errors"][str(a_path)] == (f"lost (file truncated to 0 of {HEADER_SIZE + (1 << 20)} bytes):"
                                                  " detached")
        assert st["rings"][0]["corrupt"] == 0
        # b goes on; a is not re-attached by the scan (its refusal stays the lost one)
        assert _push(b, 50, s1) == 50
        d.wait_for(lambda st: _mirrored(st) == 250 + pushed_b[0], what="b still drains")
        time.sleep(1.5)  # a housekeeping scan or two
        st = d.status()
        assert [r["name"] for r in st["rings"]] == ["b.ring"]
        assert st["ring_errors"][str(a_path)].startswith("lost (file truncated")
    log = d.log.read_text()
    assert log.count("event=ring_lost") == 1
    assert "Fatal Python error" not in log and "Traceback" not in log


# ------------------------------------------------------------------ 3: links, FIFOs, owners


def test_links_fifos_and_foreign_files_are_refused_and_never_read(daemon, tmp_path):
    d = daemon(S1)
    secret = tmp_path / "secret"
    secret.write_bytes(b"TOPSECRETBYTES!!" * 300)  # longer than a ring header
    secret.chmod(0o600)
    magic_hex = f"{int.from_bytes(b'TOPSECRE', 'little'):016x}"
    outside = tmp_path / "outside"
    outside.mkdir()
    fifo_opened = []
    with Producer(outside / "o.ring", data_size=1 << 16), \
            Producer(d.run_dir / "foreign.ring", data_size=1 << 16), \
            Producer(d.run_dir / "good.ring", data_size=1 << 16):
        os.chown(d.run_dir / "foreign.ring", 54321, -1)
        (d.run_dir / "shadow.ring").symlink_to(secret)
        (d.run_dir / "link.ring").symlink_to(outside / "o.ring")
        os.mkfifo(d.run_dir / "x.ring")
        # a writer on the FIFO would be released if the daemon opened it for reading
        w = threading.Thread(target=lambda: fifo_opened.append(os.open(d.run_dir / "x.ring", os.O_WRONLY)),
                             daemon=True)
        w.start()
        link = "a symbolic link: refused (ring files are not followed through links)"
        want = {"shadow.ring": link, "link.ring": link,
                "x.ring": "a FIFO, not a regular file: refused",
                "foreign.ring": f"owned by uid 54321, not by root, the daemon's uid {os.geteuid()} or an "
                                "allowed_uids entry: refused"}
        st = d.wait_for(lambda st: all(str(d.run_dir / n) in st["ring_errors"] for n in want)
                        and len(st["rings"]) == 1, what="every hostile file refused, the good ring taken")
        for name, why in want.items():
            assert st["ring_errors"][str(d.run_dir / name)] == f"{d.run_dir / name}: {why}"
        assert [r["name"] for r in st["rings"]] == ["good.ring"]
        # register by path: the same refusals (a link is not resolved into the runtime dir)
        for name in ("shadow.ring", "link.ring"):
            r = d.request({"op": "register", "path": str(d.run_dir / name)})
            assert r == {"ok": False, "error": f"register: {d.run_dir / name}: {want[name]}"}
        st = d.status()  # the daemon did not block on the FIFO
        w.join(0.5)
        assert fifo_opened == []  # nobody opened the FIFO's read side
    blob = d.log.read_text() + json.dumps(st)
    for leak in ("TOPSECRE", "TOPSECRET", magic_hex, "magic"):
        assert leak not in blob
    assert "event=ring_attached ring=good.ring" in d.log.read_text()
    # release the writer thread stuck in open(2)
    fd = os.open(d.run_dir / "x.ring", os.O_RDONLY | os.O_NONBLOCK)
    w.join(5)
    os.close(fd)
    for f in fifo_opened:
        os.close(f)


# ------------------------------------------------------------------ 8: size ceiling


def _rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _sparse_ring(path, data_size):
    """A ring header declaring data_size, in a sparse file of the matching size."""
    with Producer(data_size=1 << 16) as p:
        hdr = bytearray(os.pread(p.fd, HEADER_SIZE, 0))
    hdr[16:20] = data_size.to_bytes(4, "little")
    hdr[28:32] = os.getpid().to_bytes(4, "little")
    with open(path, "wb") as f:
        f.write(hdr)
        f.truncate(HEADER_SIZE + data_size)


@pytest.mark.parametrize("limit", [None, 1 << 20])
def test_a_ring_above_max_ring_size_is_refused_before_it_is_mapped(daemon, tmp_path, limit):
    d = daemon(("" if limit is None else f"max_ring_size = {limit}\n") + S1)
    shown = 256 << 20 if limit is None else limit
    rss0 = _rss_kib(d.proc.pid)
    giant = d.run_dir / "giant.ring"
    _sparse_ring(giant, 1 << 30)
    refused = {"giant.ring": 1 << 30}
    if limit is not None:
        Producer(d.run_dir / "four.ring", data_size=4 << 20).close(unlink=False)  # a real 4 MiB ring
        refused["four.ring"] = 4 << 20
    with Producer(d.run_dir / "ok.ring", data_size=1 << 20):  # at the default and at 1 MiB: taken
        st = d.wait_for(lambda st: all(str(d.run_dir / n) in st["ring_errors"] for n in refused)
                        and len(st["rings"]) == 1, what="refusals")
        for name, size in refused.items():
            path = d.run_dir / name
            assert st["ring_errors"][str(path)] == (
                f"{path}: ring file of {HEADER_SIZE + size} bytes (data area {size}) is above "
                f"[daemon] max_ring_size {shown}: refused")
        assert [r["name"] for r in st["rings"]] == ["ok.ring"]
        log = d.log.read_text()
        assert f"event=ring_refused ring=giant.ring reason='{giant}: ring file of {HEADER_SIZE + (1 << 30)}" in log
    # nothing was committed: not by the daemon (RSS), not in the file system (blocks)
    assert _rss_kib(d.proc.pid) - rss0 < 64 * 1024
    assert giant.stat().st_blocks * 512 < 1 << 20
    giant.unlink()
    for n in refused:
        (d.run_dir / n).unlink(missing_ok=True)


# ------------------------------------------------------------------ 1 and 2: the forwarder

from test_forward import SESSION, config, lab, numbered  # noqa: E402,F401  (the lab fixture)


def _accounted(b):
    return b["mirror_pushed"] + b["mirror_dropped_ring_full"] + b["mirror_dropped_no_ring"] \
        + b["mirror_dropped_ring_lost"]


def test_forwarder_survives_its_ring_truncated_under_traffic(lab, tmp_path):
    cfg = config(tmp_path, SESSION.format(rate=1, run=0, mpl=0))
    fwd = lab.start_forwarder(cfg)
    ring = tmp_path / "run" / "a0-q0.ring"
    frames = numbered(500)
    assert lab.transfer(frames, lab.src, "s0", lab.sink, "k0") == frames
    big = numbered(20000)
    got = []
    t = threading.Thread(target=lambda: got.extend(lab.transfer(big, lab.src, "s0", lab.sink, "k0", timeout=60)))
    t.start()
    try:
        time.sleep(0.2)
        os.truncate(ring, 4096)  # header kept, data area gone: the next copy faults
    finally:
        t.join()
    assert got == big  # not a frame lost while its ring went away
    assert lab.transfer(frames, lab.src, "s0", lab.sink, "k0") == frames
    assert fwd.poll() is None
    a, b = lab.stop_forwarder(fwd)["bindings"]
    assert a["ring_lost"] == f"file truncated to 4096 of {HEADER_SIZE + (4 << 20)} bytes" and b["ring_lost"] is None
    assert a["rx_packets"] == a["tx_packets"] == 500 + 20000 + 500
    assert a["dropped_tx_full"] == 0
    assert a["mirror_sampled"] == a["rx_packets"] == _accounted(a)
    assert a["mirror_dropped_ring_lost"] >= 500 and a["mirror_pushed"] >= 500
    log = (tmp_path / "fwd.log").read_text()
    assert log.count("event=ring_lost") == 1
    assert f"event=ring_lost ring=a0-q0.ring reason='file truncated to 4096 of {HEADER_SIZE + (4 << 20)} bytes'" \
        in log


BOTH = """
[[session]]
name = "span"
input = ["a0", "b0"]
output = { type = "tap", name = "mirror0" }
"""


@pytest.mark.parametrize("size,a_has_ring", [("6m", True), ("1m", False)])
def test_forwarder_on_a_full_runtime_filesystem_forwards_and_counts(lab, tmp_path, size, a_has_ring):
    """The runtime directory on a tmpfs with room for one ring (6m) or none (1m): rings
    that cannot be backed are refused at creation, with the reason, nothing left behind;
    the forwarder starts, forwards everything, and counts what it could not mirror."""
    run = tmp_path / "run"
    run.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", f"mrtest-{uuid.uuid4().hex[:6]}",
                    str(run)], check=True)
    try:
        cfg = config(tmp_path, BOTH)
        fwd = lab.start_forwarder(cfg)
        rings = sorted(p.name for p in run.iterdir() if p.name.endswith(".ring") or ".tmp." in p.name)
        assert rings == (["a0-q0.ring"] if a_has_ring else [])
        a_frames = numbered(500)
        assert lab.transfer(a_frames, lab.src, "s0", lab.sink, "k0") == a_frames
        back = [f[6:12] + f[0:6] + f[12:] for f in numbered(300)]
        assert lab.transfer(back, lab.sink, "k0", lab.src, "s0") == back
        assert fwd.poll() is None
        a, b = lab.stop_forwarder(fwd)["bindings"]
    finally:
        for p in lab.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()
        subprocess.run(["umount", str(run)], check=True)
    assert (a["rx_packets"], a["tx_packets"], b["rx_packets"], b["tx_packets"]) == (500, 500, 300, 300)
    assert a["mirror_sampled"] == _accounted(a) == 500
    assert b["mirror_sampled"] == b["mirror_dropped_no_ring"] == 300
    assert a["mirror_pushed"] == (500 if a_has_ring else 0)
    log = (tmp_path / "fwd.log").read_text()
    refused = [ln for ln in log.splitlines() if "event=ring_refused" in ln]
    names = ["b0-q0.ring"] if a_has_ring else ["a0-q0.ring", "b0-q0.ring"]
    assert len(refused) == len(names)
    for ln, name in zip(refused, names):
        assert f"ring={name} reason=\"cannot allocate the ring's {HEADER_SIZE + (4 << 20)} bytes for {run / name}: " \
               "No space left on device\"" in ln, ln
    assert "Traceback" not in log
