"""Send and receive raw Ethernet frames on an interface (run inside a namespace):

    python pktio.py send IFACE FRAMES_FILE [GAP_EVERY]
    python pktio.py recv IFACE COUNT TIMEOUT OUT_FILE     (prints "ready" once bound)

Frames files are a sequence of 4-byte big-endian lengths and frames.  Bounded in count
and time; only ever touches the named interface."""
import socket
import struct
import sys
import time

ETH_P_ALL = 3
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6


def write_frames(path, frames):
    with open(path, "wb") as f:
        for fr in frames:
            f.write(struct.pack("!I", len(fr)) + fr)


def read_frames(path):
    data = open(path, "rb").read()
    out, off = [], 0
    while off < len(data):
        (n,) = struct.unpack_from("!I", data, off)
        out.append(data[off + 4:off + 4 + n])
        off += 4 + n
    return out


def main():
    cmd, iface = sys.argv[1], sys.argv[2]
    if cmd == "send":
        frames = read_frames(sys.argv[3])
        gap = int(sys.argv[4]) if len(sys.argv) > 4 else 32
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        s.bind((iface, 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        for i, fr in enumerate(frames):
            s.send(fr)
            if gap and i % gap == gap - 1:
                time.sleep(0.0003)  # pace: a veth in generic XDP mode drops bursts
        return
    count, timeout, out = int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((iface, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    # the kernel may hand a VLAN tag over as metadata (rx VLAN offload); put it back into
    # the frame as tcpdump does, so what we compare is what was on the wire
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    s.settimeout(0.2)
    print("ready", flush=True)
    got, end = [], time.monotonic() + timeout
    while len(got) < count and time.monotonic() < end:
        try:
            data, anc, _, addr = s.recvmsg(65535, socket.CMSG_SPACE(32))
        except TimeoutError:
            continue
        if addr[2] == PACKET_OUTGOING:
            continue
        for level, kind, cdata in anc:
            if level == SOL_PACKET and kind == PACKET_AUXDATA:
                status, _, _, _, _, tci, tpid = struct.unpack_from("IIIHHHH", cdata)
                if status & TP_STATUS_VLAN_VALID:
                    tpid = tpid if status & TP_STATUS_VLAN_TPID_VALID else 0x8100
                    data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
        got.append(data)
    write_frames(out, got)


if __name__ == "__main__":
    main()
