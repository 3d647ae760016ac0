"""Test frames built byte by byte (no scapy): what an operator expects to see, unchanged,
on the mirror interface."""
import struct

SRC = bytes.fromhex("020000000001")
DST = bytes.fromhex("020000000002")


def _csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4_udp(payload: bytes, src="10.99.0.1", dst="10.99.0.2", sport=4000, dport=5000) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    a = bytes(map(int, src.split("."))) + bytes(map(int, dst.split(".")))
    hdr = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0) + a
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return hdr + udp


def ipv6_tcp(payload: bytes) -> bytes:
    src = bytes.fromhex("fd00000000000000000000000000000" + "1")
    dst = bytes.fromhex("fd00000000000000000000000000000" + "2")
    tcp = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 5 << 4, 0x02, 65535, 0, 0) + payload
    return struct.pack("!IHBB", 6 << 28, len(tcp), 6, 64) + src + dst + tcp


def eth(ethertype: int, body: bytes, tags: tuple[tuple[int, int], ...] = ()) -> bytes:
    h = DST + SRC
    for tpid, vid in tags:
        h += struct.pack("!HH", tpid, vid)
    return h + struct.pack("!H", ethertype) + body


def arp_request() -> bytes:
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + SRC + bytes([10, 99, 0, 1]) + b"\0" * 6 + bytes([10, 99, 0, 2])
    return bytes.fromhex("ffffffffffff") + SRC + b"\x08\x06" + body + b"\0" * 18


def lldp() -> bytes:
    tlvs = bytes.fromhex("0207046e6f6465303104030373706f") + bytes.fromhex("06020078") + b"\0\0"
    return bytes.fromhex("0180c200000e") + SRC + b"\x88\xcc" + tlvs + b"\0" * max(0, 46 - len(tlvs))


def frame_set() -> list[tuple[str, bytes]]:
    """The frames of the daemon issue: IPv4/UDP, IPv6/TCP, 802.1Q, QinQ, ARP, LLDP, a 60-byte
    runt and a 9000-byte jumbo."""
    v4 = ipv4_udp(b"hello mirror" * 4)
    return [
        ("ipv4-udp", eth(0x0800, v4)),
        ("ipv6-tcp", eth(0x86DD, ipv6_tcp(b"GET / HTTP/1.1\r\n\r\n"))),
        ("dot1q", eth(0x0800, ipv4_udp(b"vlan 100" * 3), tags=((0x8100, 100),))),
        ("qinq", eth(0x86DD, ipv6_tcp(b"qinq"), tags=((0x88A8, 200), (0x8100, 300)))),
        ("arp", arp_request()),
        ("lldp", lldp()),
        ("runt60", eth(0x0800, ipv4_udp(b"x" * 18))),
        ("jumbo9000", eth(0x0800, ipv4_udp(bytes(i & 0xFF for i in range(9000 - 14 - 28))))),
    ]


def l3_of(frame: bytes) -> tuple[int, bytes]:
    """(ethertype, L3 bytes) after any 802.1Q/802.1ad tags."""
    off = 12
    while True:
        et = struct.unpack_from("!H", frame, off)[0]
        off += 2
        if et not in (0x8100, 0x88A8, 0x9100):
            return et, frame[off:]
        off += 2


def read_pcap(path) -> tuple[int, list[bytes]]:
    """(linktype, frames) of a classic pcap file."""
    data = open(path, "rb").read()
    magic = struct.unpack_from("<I", data)[0]
    e = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack_from(e + "I", data, 20)[0]
    out, off = [], 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack_from(e + "IIII", data, off)
        out.append(data[off + 16:off + 16 + incl])
        off += 16 + incl
    return linktype, out
