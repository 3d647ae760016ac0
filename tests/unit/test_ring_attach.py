"""Creating, publishing and attaching rings: named files, memfds, errors, restarts."""
import errno
import mmap
import os
import struct

import pytest

from mirrord.ring import HEADER_SIZE, Consumer, Producer, RingError


def test_named_ring_is_published_atomically_and_removed_by_its_producer(tmp_path):
    path = tmp_path / "eth1-q0.ring"
    with Producer(path, data_size=1 << 16, name="eth1:q0") as p:
        assert path.exists()
        assert [f.name for f in tmp_path.iterdir()] == ["eth1-q0.ring"]  # no .tmp left
        assert path.stat().st_size == HEADER_SIZE + (1 << 16)
        umask = os.umask(0)
        os.umask(umask)
        assert path.stat().st_mode & 0o777 == 0o660 & ~umask  # group: the daemon's user
        assert p.counters().producer_pid == os.getpid()
    assert not path.exists()


def test_create_refuses_bad_geometry_with_the_reason():
    with pytest.raises(RingError, match="data_size 100000: must be a power of two"):
        Producer(data_size=100_000)
    with pytest.raises(RingError, match="max_frame 32: must be between 64"):
        Producer(max_frame=32)


def test_attach_by_path_fetches_the_eventfd_from_the_producer(tmp_path):
    path = tmp_path / "r.ring"
    with Producer(path, data_size=1 << 16) as p:
        with Consumer.open(path, eventfd=Consumer.FETCH_EVENTFD) as c:
            assert c.eventfd >= 0 and c.eventfd != p.eventfd
            assert not list(c.records())
            assert c.prepare_sleep()
            assert p.push(b"\x01" * 60)
            # the producer saw the sleep flag and wrote the eventfd we fetched
            assert os.read(c.eventfd, 8) == struct.pack("=Q", 1)
            assert p.counters().wakeups == 1
            # a busy ring (consumer not asleep) costs the producer no eventfd writes
            for _ in range(100):
                p.push(b"\x02" * 60)
            assert p.counters().wakeups == 1
            assert len(list(c.records())) == 101


def test_restarted_consumer_resumes_where_the_ring_stands(tmp_path):
    path = tmp_path / "r.ring"
    with Producer(path, data_size=1 << 16) as p:
        for i in range(10):
            p.push(bytes([i]) * 64)
        with Consumer.open(path) as c1:
            got = [r.seq for r in c1.records(budget=4)]
        assert got == [0, 1, 2, 3]
        for i in range(10, 12):
            p.push(bytes([i]) * 64)
        with Consumer.open(path) as c2:  # a new daemon: counters and position carry over
            assert [r.seq for r in c2.records()] == list(range(4, 12))
            k = c2.counters()
            assert k.consumed_packets == 12 and k.attaches == 2


def _copy_with(tmp_path, p, offset, fmt, value):
    raw = bytearray(os.pread(p.fd, HEADER_SIZE + (1 << 16), 0))
    struct.pack_into(fmt, raw, offset, value)
    bad = tmp_path / "bad.ring"
    bad.write_bytes(raw)
    return bad


@pytest.mark.parametrize(
    "offset,fmt,value,message",
    [
        (0, "=Q", 0x4141414141414141, "not a mirrord ring: magic 0x4141414141414141"),
        (8, "=I", 2, "ring ABI version 2, this build speaks version 1"),
        (12, "=I", 8192, "ring header size 8192"),
        (16, "=I", 1 << 17, "header declares 135168"),
        (16, "=I", 1000, "declares data_size 1000 and max_frame 9216: invalid"),
    ],
)
def test_attach_refuses_foreign_or_mismatched_rings(tmp_path, offset, fmt, value, message):
    with Producer(data_size=1 << 16) as p:
        bad = _copy_with(tmp_path, p, offset, fmt, value)
        with pytest.raises(RingError) as e:
            Consumer.open(bad)
        assert message in str(e.value)
        assert str(bad) in str(e.value)


def test_attach_refuses_a_truncated_file(tmp_path):
    f = tmp_path / "short.ring"
    f.write_bytes(b"MRRRING1")
    with pytest.raises(RingError, match="shorter than its header"):
        Consumer.open(f)


def test_memfd_ring_cannot_be_shrunk_under_the_producer():
    with Producer(data_size=1 << 16) as p:
        with pytest.raises(PermissionError):
            os.ftruncate(p.fd, 4096)
        with mmap.mmap(p.fd, HEADER_SIZE + (1 << 16)) as m:
            assert m[:8] == b"MRRRING1"


# -- hostile files: truncation, links, FIFOs, size (issue 13)


def test_a_truncated_named_ring_is_lost_not_fatal_in_process(tmp_path):
    """pytest runs with faulthandler on (it hooks SIGBUS too): the ring guard sits on top
    of it, so truncating a ring this very process maps is survived by both sides."""
    import faulthandler

    path = tmp_path / "t.ring"
    with Producer(path, data_size=1 << 16) as p, Consumer.open(path) as c:
        assert faulthandler.is_enabled()
        for i in range(5):
            assert p.push(bytes([i]) * 1000)
        assert [r.seq for r in c.records(budget=2)] == [0, 1]
        assert not p.lost and not c.lost
        os.truncate(path, 0)
        assert not p.push(b"\x09" * 1000)  # faulted, was swapped for zero pages: lost
        assert p.lost and p.lost_reason() == f"file truncated to 0 of {HEADER_SIZE + (1 << 16)} bytes"
        assert list(c.records()) == []     # no record read from the zeros, no SIGBUS
        assert c.lost and c.lost_reason().startswith("file truncated to 0 of")
        assert c.corruption() == ""        # a lost ring is not a corrupt one
        assert not p.push(b"\x0a" * 100)   # stays lost


FOREIGN_SIGBUS = """
import faulthandler, mmap, os, sys
from mirrord.ring import Producer
d = sys.argv[1]
if sys.argv[2] == "guard-first":  # faulthandler enabled after the first ring: ours re-installs on top
    p0 = Producer(d + "/first.ring", data_size=1 << 16)
faulthandler.enable()
p = Producer(d + "/x.ring", data_size=1 << 16)
os.truncate(d + "/x.ring", 4096)
print("ours", p.push(b"x" * 100), p.lost, flush=True)
f = open(d + "/other", "w+b"); f.truncate(8192)
m = mmap.mmap(f.fileno(), 8192); f.truncate(0)
m[100] = 1  # not a ring: faulthandler's traceback, then death by SIGBUS
print("survived a real fault", flush=True)
"""


@pytest.mark.parametrize("order", ["faulthandler-first", "guard-first"])
def test_a_sigbus_outside_every_ring_still_reaches_faulthandler_and_kills(tmp_path, order):
    import signal
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", FOREIGN_SIGBUS, str(tmp_path), order], capture_output=True,
                       text=True, timeout=60)
    assert r.stdout.splitlines() == ["ours False True"], (r.stdout, r.stderr)
    assert r.returncode == -signal.SIGBUS, (r.returncode, r.stderr)
    assert "Fatal Python error: Bus error" in r.stderr


def test_consumer_open_refuses_links_and_fifos_without_blocking(tmp_path):
    path = tmp_path / "r.ring"
    with Producer(path, data_size=1 << 16):
        link = tmp_path / "link.ring"
        link.symlink_to(path)
        with pytest.raises(RingError) as e:
            Consumer.open(link)
        assert e.value.errno == errno.ELOOP
    fifo = tmp_path / "x.ring"
    os.mkfifo(fifo)
    with pytest.raises(RingError, match=r"x.ring: cannot attach ring: not a mirrord ring: a FIFO \(mode 0644\)"):
        Consumer.open(fifo)  # O_NONBLOCK: returns at once


def test_attach_refuses_a_ring_above_the_size_limit_before_mapping_it(tmp_path):
    path = tmp_path / "big.ring"
    with Producer(path, data_size=1 << 20) as p:
        with pytest.raises(RingError) as e:
            Consumer(p.fd, max_data_size=1 << 16)
        assert e.value.errno == errno.EFBIG
        assert "ring file is 1052672 bytes, above the limit of 69632 (4096 + max data_size 65536)" in str(e.value)
        with Consumer(p.fd, max_data_size=1 << 20) as c:  # at the limit: taken
            assert c.counters().data_size == 1 << 20


def test_create_backs_the_whole_ring_up_front(tmp_path):
    """posix_fallocate: every page is allocated at creation (a sparse file would fault
    on a full filesystem at the first copy that lands on a hole)."""
    path = tmp_path / "r.ring"
    with Producer(path, data_size=1 << 20):
        assert path.stat().st_blocks * 512 >= HEADER_SIZE + (1 << 20)
