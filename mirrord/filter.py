"""Capture filters: a session's ``filter`` (tcpdump's syntax, pcap-filter(7)) compiled by
libpcap into classic BPF, the program the fast path runs on each frame before sampling
(native/src/tap.c, mr_tap__set_rule_filter).  Never a filter language of our own."""
from __future__ import annotations

import threading

from mirrord._ring import ffi, lib

SNAPLEN = 262144
MAX_FILTER_BYTES = 4096
BPF_MAXINSNS = 4096  # the kernel's and the tap's limit on a program's length
INSN_SIZE = 8        # struct bpf_insn: u16 code, u8 jt, u8 jf, u32 k (host order)

# pcap_compile keeps parser state in globals in libpcap < 1.8; one compile at a time
_lock = threading.Lock()


class FilterError(ValueError):
    """libpcap's own text for a program it could not compile."""


def compile_filter(expr: str) -> bytes:
    """The program for ``expr`` on Ethernet frames, as struct bpf_insn bytes (host order)."""
    raw = expr.encode()
    if "\0" in expr:
        raise FilterError("contains a NUL byte")
    if len(raw) > MAX_FILTER_BYTES:
        raise FilterError(f"is {len(raw)} bytes long, at most {MAX_FILTER_BYTES}")
    with _lock:
        p = lib.pcap_open_dead(lib.DLT_EN10MB, SNAPLEN)
        if p == ffi.NULL:
            raise FilterError("libpcap: out of memory")
        try:
            prog = ffi.new("struct bpf_program *")
            if lib.pcap_compile(p, prog, raw, 1, lib.PCAP_NETMASK_UNKNOWN) != 0:
                raise FilterError(ffi.string(lib.pcap_geterr(p)).decode(errors="replace"))
            try:
                if prog.bf_len == 0 or prog.bf_len > BPF_MAXINSNS:
                    raise FilterError(f"compiles to {prog.bf_len} instructions, at most {BPF_MAXINSNS}")
                return bytes(ffi.buffer(prog.bf_insns, prog.bf_len * INSN_SIZE))
            finally:
                lib.pcap_freecode(prog)
        finally:
            lib.pcap_close(p)


def matches(program: bytes, frame: bytes) -> bool:
    """libpcap's bpf_filter() of ``program`` on one whole frame (tests and tools)."""
    insns = ffi.from_buffer("struct bpf_insn[]", program)
    return lib.bpf_filter(insns, frame, len(frame), len(frame)) != 0
