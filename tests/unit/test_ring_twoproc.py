"""Two processes: a producer pushes millions of sequence-numbered, pattern-filled copies;
this process drains (woken by the eventfd) and checks every sequence number and payload.
"""
import json
import os
import select
import socket
import subprocess
import sys

from fixtures import ring_producer
from fixtures.ring_producer import PATTERN, frame_len

from mirrord.ring import Consumer

RECORDS = 2_000_000


def test_two_processes_every_record_checked():
    parent, child = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, ring_producer.__file__,
         str(child.fileno()), str(RECORDS), str(1 << 20)],
        pass_fds=[child.fileno()],
    )
    child.close()
    try:
        _, fds, _, _ = socket.recv_fds(parent, 16, 2)
        shm_fd, efd = fds
        cons = Consumer(shm_fd, eventfd=efd)
        os.close(shm_fd)
        os.close(efd)
        parent.sendall(b"g")

        state = {"next": 0, "got": 0, "bad": 0, "bytes": 0}

        def check(rec):
            seq = rec.seq
            n = frame_len(seq)
            o = seq & 0xFF
            if seq < state["next"] or rec.data != PATTERN[o:o + n] or rec.ifindex != seq & 0xFFFF:
                state["bad"] += 1
            state["next"] = seq + 1
            state["got"] += 1
            state["bytes"] += n

        report = None
        buf = b""
        while report is None:
            cons.drain(check)
            if cons.prepare_sleep():
                r, _, _ = select.select([cons.eventfd, parent], [], [], 30)
                assert r, "no wake-up and no report within 30 s"
                if cons.eventfd in r:
                    os.read(cons.eventfd, 8)
                if parent in r:
                    buf += parent.recv(4096)
                    if buf.endswith(b"\n"):
                        report = json.loads(buf)
        cons.drain(check)  # whatever was pushed before the report

        k = cons.counters()
        assert state["bad"] == 0
        assert report["pushed"] + report["dropped"] == RECORDS
        assert k.pushed_packets == report["pushed"]
        assert k.dropped_ring_full_packets == report["dropped"]
        assert state["got"] == report["pushed"], "every pushed record was drained"
        assert k.consumed_packets == report["pushed"]
        assert k.consumed_bytes == state["bytes"] == k.pushed_bytes
        assert k.corrupt_events == 0
        cons.close()
        parent.sendall(b"x")
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        parent.close()
