"""``mirrord demo``: the built-in lab.

Three network namespaces joined by veth pairs, all made here and removed on exit (also
on Ctrl-C):

    src:s0 <-> a0:fwd:b0 <-> k0:sink        mirror0 (TAP) in fwd

The forwarder (AF_XDP, generic mode) forwards a0<->b0; the daemon runs the default
session (input a0, rate 1, output TAP mirror0); a bounded burst of UDP frames goes from
src to sink; then the forwarding and mirror counters and the first lines tcpdump saw on
mirror0 are printed.  Traffic stays inside the namespaces; no addresses are used.
"""
from __future__ import annotations

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
from pathlib import Path

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


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def demo(count: int = 1000, size: int = 128) -> int:
    if os.geteuid() != 0:
        print("mirrord demo: needs root (it creates network namespaces)", file=sys.stderr)
        return 1
    for tool in ("ip", "tcpdump"):
        if shutil.which(tool) is None:
            print(f"mirrord demo: {tool} is not installed", file=sys.stderr)
            return 1
    tag = uuid.uuid4().hex[:6]
    src, fwd, sink = f"mrlab-src-{tag}", f"mrlab-fwd-{tag}", f"mrlab-sink-{tag}"
    work = Path(tempfile.mkdtemp(prefix="mirrord-lab-"))
    cfg = work / "mirrord.toml"
    cfg.write_text(f'[daemon]\nruntime_dir = "{work / "run"}"\n' + DEFAULT_SESSION)
    procs: list[subprocess.Popen[str]] = []
    py = sys.executable
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        print(f"lab: namespaces {src} <-> {fwd} <-> {sink}")
        for ns in (src, fwd, sink):
            _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", "s0", "netns", src, "type", "veth", "peer", "name", "a0", "netns", fwd)
        _run("ip", "link", "add", "b0", "netns", fwd, "type", "veth", "peer", "name", "k0", "netns", sink)
        for ns, dev in ((src, "s0"), (fwd, "a0"), (fwd, "b0"), (sink, "k0")):
            _run("ip", "-n", ns, "link", "set", dev, "addrgenmode", "none", "up")

        log = open(work / "daemon.log", "w")
        daemon = subprocess.Popen(["ip", "netns", "exec", fwd, py, "-m", "mirrord", "run", "-c", str(cfg)],
                                  stdout=log, stderr=log, text=True)
        procs.append(daemon)
        sock = work / "run" / "control.sock"
        for _ in range(200):
            if sock.exists():
                break
            time.sleep(0.05)
        print("lab: daemon up (session 'lab': a0 -> tap mirror0, rate 1)")
        tcpdump = subprocess.Popen(["ip", "netns", "exec", fwd, "tcpdump", "-i", "mirror0", "-n", "-e",
                                    "-c", "5", "--immediate-mode", "-l"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(tcpdump)
        assert tcpdump.stderr is not None
        tcpdump.stderr.readline()  # "listening on mirror0 ..."
        fwdp = subprocess.Popen(["ip", "netns", "exec", fwd, py, "-m", "mirrord", "forward", "-c", str(cfg),
                                 "--pair", "a0:b0"], stdout=subprocess.PIPE,
                                stderr=open(work / "forward.log", "w"), text=True)
        procs.append(fwdp)
        assert fwdp.stdout is not None
        if fwdp.stdout.readline().strip() != "forwarding":
            print("lab: the forwarder did not start:\n" + (work / "forward.log").read_text(), file=sys.stderr)
            return 1
        print(f"lab: forwarder up (AF_XDP a0 <-> b0); sending {count} UDP frames of {size} bytes src -> sink")
        rx = subprocess.Popen(["ip", "netns", "exec", sink, "tcpdump", "-i", "k0", "-n", "-B", "16384",
                               "-w", "/dev/null"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        procs.append(rx)
        assert rx.stderr is not None
        rx.stderr.readline()
        subprocess.run(["ip", "netns", "exec", src, py, "-m", "mirrord.demo", "send", "s0", str(count), str(size)],
                       check=True, timeout=120)
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
        for ns in (src, fwd, sink):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
        print("lab: torn down (namespaces, links, processes)")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "send":
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit("usage: python -m mirrord.demo send IFACE COUNT SIZE")
