"""Producer process for test_ring_twoproc: creates a ring, hands its fds to the parent over
a Unix socket (SCM_RIGHTS), pushes sequence-numbered pattern-filled copies, reports.

    python ring_producer.py SOCK_FD RECORDS DATA_SIZE
"""
import json
import socket
import sys

from mirrord.ring import Producer

PATTERN = bytes(range(256)) * 40


def frame_len(seq: int) -> int:
    return 9216 if seq % 4096 == 4095 else 60 + (seq * 7) % 1455


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    records, data_size = int(sys.argv[2]), int(sys.argv[3])
    with Producer(data_size=data_size, name="twoproc") as p:
        socket.send_fds(sock, [b"ring"], [p.fd, p.eventfd])
        sock.recv(1)  # the consumer is attached
        push = p.push
        for seq in range(records):
            n = frame_len(seq)
            o = seq & 0xFF
            push(PATTERN[o:o + n], ifindex=seq & 0xFFFF, ts_ns=seq)
        k = p.counters()
        sock.sendall(json.dumps({"pushed": k.pushed_packets,
                                 "dropped": k.dropped_ring_full_packets}).encode() + b"\n")
        sock.recv(1)  # keep the ring until the consumer is done


if __name__ == "__main__":
    main()
