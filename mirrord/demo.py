"""``mirrord demo``: the built-in lab.

Three network namespaces joined by veth pairs, all made here and removed on exit (also
on Ctrl-C):

    src:s0 <-> a0:fwd:b0 <-> k0:sink        mirror0 (TAP) in fwd

The forwarder (AF_XDP, generic mode) forwards a0<->b0; the daemon runs the default
session (input a0, rate 1, output TAP mirror0); a bounded burst of UDP frames goes from
src to sink; then the forwarding and mirror counters and the first lines tcpdump saw on
mirror0 are printed.  Traffic stays inside the namespaces; no addresses are used.

Namespaces and links are made over netlink (pyroute2), as everywhere in the product; the
processes (daemon, forwarder, tcpdump, the sender) enter their namespace with setns(2)
between fork and exec.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyroute2 import NetNS, netns

IN6_ADDR_GEN_MODE_NONE = 1  # no IPv6 link-local address: no DAD/RS frames in the counts

DEFAULT_SESSION = """
[[session]]
name = "lab"
input = ["a0"]
rate = 1
output = { type = "tap", name = "mirror0" }
"""


def _udp_frame(i: int, size: int) -> bytes:
    payload = f"mirrord lab frame {i}".encode().ljust(max(0, size - 42), b".")
    udp = struct.pack("!HHHH", 40000 + i % 100, 5000, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0,
                     bytes([10, 99, 0, 1]), bytes([10, 99, 0, 2]))
    s = sum(struct.unpack("!10H", ip))
    s = (s & 0xFFFF) + (s >> 16)
    ip = ip[:10] + struct.pack("!H", ~s & 0xFFFF) + ip[12:]
    return bytes.fromhex("020000000002020000000001") + b"\x08\x00" + ip + udp


def send(iface: str, count: int, size: int) -> None:
    """The traffic generator (run inside the source namespace): bounded and paced."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.bind((iface, 0))
    for i in range(count):
        s.send(_udp_frame(i, size))
        if i % 32 == 31:
            time.sleep(0.0003)


def veth(ns: str, name: str, peer_ns: str, peer: str, mtu: int | None = None) -> None:
    """A veth pair, ``name`` in ``ns`` and ``peer`` in ``peer_ns``, both ends with no IPv6
    address generation, ``mtu`` when given, and up."""
    with NetNS(ns) as ipr:
        ipr.link("add", ifname=name, kind="veth", peer={"ifname": peer, "net_ns_fd": peer_ns})
    for where, dev in ((ns, name), (peer_ns, peer)):
        with NetNS(where) as ipr:
            (index,) = ipr.link_lookup(ifname=dev)
            if mtu is not None:
                ipr.link("set", index=index, mtu=mtu)
            ipr.link("set", index=index, IFLA_AF_SPEC={"attrs": [
                ("AF_INET6", {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", IN6_ADDR_GEN_MODE_NONE)]})]})
            ipr.link("set", index=index, state="up")


STOP = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def held_signals() -> Iterator[None]:
    """SIGINT and SIGTERM wait (pending) until the block ends.  Around a fork: Python runs
    its at-fork hooks there, and a KeyboardInterrupt raised inside one is lost; and around
    setup steps whose result must be recorded for the teardown before an interrupt lands."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def spawn(procs: list[subprocess.Popen[str]], ns_fd: int, argv: list[str],
          **kw: Any) -> subprocess.Popen[str]:
    """Start ``argv`` in the namespace open at ``ns_fd`` (the child calls setns(2) between
    fork and exec) and record it in ``procs`` before an interrupt can land."""
    def enter() -> None:
        netns.setns(ns_fd)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP)  # the mask survives exec

    with held_signals():
        p = subprocess.Popen(argv, preexec_fn=enter, text=True, **kw)
        procs.append(p)
    return p


def demo(count: int = 1000, size: int = 128) -> int:
    if os.geteuid() != 0:
        print("mirrord demo: needs root (it creates network namespaces)", file=sys.stderr)
        return 1
    if shutil.which("tcpdump") is None:
        print("mirrord demo: tcpdump is not installed", file=sys.stderr)
        return 1
    tag = uuid.uuid4().hex[:6]
    src, fwd, sink = f"mrlab-src-{tag}", f"mrlab-fwd-{tag}", f"mrlab-sink-{tag}"
    work = Path(tempfile.mkdtemp(prefix="mirrord-lab-"))
    cfg = work / "mirrord.toml"
    cfg.write_text(f'[daemon]\nruntime_dir = "{work / "run"}"\n' + DEFAULT_SESSION)
    procs: list[subprocess.Popen[str]] = []
    made: list[str] = []  # namespaces created, removed in the end
    fds: list[int] = []
    py = sys.executable
    me = os.getpid()

    def interrupted(signum: int, _frame: object) -> None:
        if os.getpid() != me:  # a helper pyroute2 forked (netns.create, NetNS): end it, not the lab
            os._exit(128 + signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    try:
        print(f"lab: namespaces {src} <-> {fwd} <-> {sink}")
        with held_signals():  # pyroute2 forks helpers; what exists is recorded for the teardown
            for ns in (src, fwd, sink):
                made.append(ns)
                netns.create(ns)
                fds.append(os.open(os.path.join(netns.NETNS_RUN_DIR, ns), os.O_RDONLY | os.O_CLOEXEC))
            veth(src, "s0", fwd, "a0")
            veth(fwd, "b0", sink, "k0")
        at_src, at_fwd, at_sink = fds

        log = open(work / "daemon.log", "w")
        spawn(procs, at_fwd, [py, "-m", "mirrord", "run", "-c", str(cfg)], stdout=log, stderr=log)
        sock = work / "run" / "control.sock"
        for _ in range(200):
            if sock.exists():
                break
            time.sleep(0.05)
        print("lab: daemon up (session 'lab': a0 -> tap mirror0, rate 1)")
        tcpdump = spawn(procs, at_fwd, ["tcpdump", "-i", "mirror0", "-n", "-e", "-c", "5", "--immediate-mode", "-l"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert tcpdump.stderr is not None
        tcpdump.stderr.readline()  # "listening on mirror0 ..."
        fwdp = spawn(procs, at_fwd, [py, "-m", "mirrord", "forward", "-c", str(cfg), "--pair", "a0:b0"],
                     stdout=subprocess.PIPE, stderr=open(work / "forward.log", "w"))
        assert fwdp.stdout is not None
        if fwdp.stdout.readline().strip() != "forwarding":
            print("lab: the forwarder did not start:\n" + (work / "forward.log").read_text(), file=sys.stderr)
            return 1
        print(f"lab: forwarder up (AF_XDP a0 <-> b0); sending {count} UDP frames of {size} bytes src -> sink")
        rx = spawn(procs, at_sink, ["tcpdump", "-i", "k0", "-n", "-B", "16384", "-w", "/dev/null"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert rx.stderr is not None
        rx.stderr.readline()
        sender = spawn(procs, at_src, [py, "-m", "mirrord.demo", "send", "s0", str(count), str(size)])
        if sender.wait(timeout=120):
            print(f"lab: the sender failed (exit {sender.returncode})", file=sys.stderr)
            return 1
        time.sleep(1.0)
        rx.send_signal(signal.SIGINT)
        # what arrived on k0: the kernel's count of frames that reached tcpdump's filter
        sink_seen = next((ln.split()[0] for ln in rx.communicate(timeout=10)[1].splitlines()
                          if "received by filter" in ln), "?")
        fwdp.send_signal(signal.SIGTERM)
        out, _ = fwdp.communicate(timeout=15)
        fst = json.loads(out.strip().splitlines()[-1])
        status = subprocess.run([py, "-m", "mirrord", "status", "-c", str(cfg)], capture_output=True,
                                text=True).stdout
        tcpdump.send_signal(signal.SIGINT)
        lines = tcpdump.communicate(timeout=10)[0].splitlines()

        print()
        print(f"sink k0 received {sink_seen} of {count} frames")
        print(f"{'binding':<10} {'rx':>8} {'forwarded':>10} {'fwd drops':>9} {'sampled':>8} {'pushed':>8} "
              f"{'ring_full':>9}")
        for b in fst["bindings"]:
            print(f"{b['ingress'] + '->' + b['egress']:<10} {b['rx_packets']:>8} {b['tx_packets']:>10} "
                  f"{b['dropped_tx_full']:>9} {b['mirror_sampled']:>8} {b['mirror_pushed']:>8} "
                  f"{b['mirror_dropped_ring_full']:>9}")
        print()
        print(status.rstrip())
        print()
        print("first lines of tcpdump -i mirror0 -e:")
        for ln in lines[:5]:
            print("  " + ln)
        return 0
    except KeyboardInterrupt:
        print("\nlab: interrupted, tearing down", file=sys.stderr)
        return 130
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for fd in fds:
            os.close(fd)
        for ns in made:  # the links go with their namespace
            with contextlib.suppress(OSError):  # FileNotFoundError: interrupted before it existed
                netns.remove(ns)
        shutil.rmtree(work, ignore_errors=True)
        print("lab: torn down (namespaces, links, processes)")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "send":
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit("usage: python -m mirrord.demo send IFACE COUNT SIZE")
