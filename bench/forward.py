#!/usr/bin/env python3
"""Forwarding through the AF_XDP fast path with and without mirroring, beside the kernel's
own forwarding with tc mirred port mirroring, measured side by side in one run (root).

Every mode is a lab of its own, all up at once (three network namespaces each):

    src:s0 --trafgen--> a0:[forwarder or bridge]:b0 --> k0:sink    mirror TAP in fwd

- xdp: mirroring off: `mirrord forward --pair a0:b0` with a daemon that has no session;
- xdp: mirroring off, 2nd lab (control): the same, again.  Its ratio to the first says
  how far the method itself is from 1.00;
- xdp: rate 1, daemon draining: session a0 -> TAP mirror0, every frame sampled;
- xdp: rate 1, daemon stopped: the same with the daemon SIGSTOPped from before the first
  frame: the ring fills and every later copy is dropped as ring_full;
- xdp: rate 100, daemon draining: one frame in 100 sampled;
- kernel: bridge: a0 and b0 in a Linux bridge;
- kernel: bridge + tc mirred: the same, plus `tc filter add dev a0 ingress ... u32 match
  u32 0 0 action mirred egress mirror dev m0`, m0 a TAP read by a C read() loop
  (bench/tap_read.c): the comparison point for the mirror side.

Every lab's trafgen (64-byte frames, bounded by --num), forwarder, daemon and TAP reader
are stopped (SIGSTOP) but those of one lab.  The bench lets that lab run for a slice:
SIGCONT, --settle to settle, --slice measured, SIGSTOP (the whole trafgen process group
first: `trafgen --cpus 1` forks a worker).  Between slices a lab is frozen whole, so what
one left in its rings (a daemon's backlog) never runs in another's slice.  A round gives
every lab one slice, in a random order (a new one every round).  Per slice, from the kernel's
interface counters: frames forwarded (rx of k0) and copies that reached the mirror TAP
(rx of mirror0, which the daemon writes; tx of m0, which tc mirred fills and the reader
empties).  A ratio is the median over rounds of the two labs' rates in the same round,
with its quartiles.

Targets (from the issue that introduced this bench): rate 1 with the daemon stopped
>= 95 % of mirroring off; rate 100 >= 99 %.

Everything this makes carries one random tag: namespaces mrb{s,f,k}-TAG*, the directory
/dev/shm/mirrord-fbench-TAG-*.  It leaves nothing behind, also on Ctrl-C, SIGTERM or an
error: trafgen is killed by process group, and before the namespaces go every process
still inside one of them is killed; then it checks that no process, namespace or
directory of the tag is left, and exits 1 if one is.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import json
import os
import platform
import random
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

# 60 bytes + FCS = a 64-byte frame on the wire.  A local experimental ethertype (0x88b5):
# an IPv4 frame with no route here was not forwarded by this kernel's bridge, and the
# AF_XDP forwarder does not look at the ethertype anyway.
FRAME = ("{ 0x02,0x00,0x00,0x00,0x00,0x02, 0x02,0x00,0x00,0x00,0x00,0x01, 0x88,0xb5, "
         "fill(0x61, 46) }\n")

SESSION = """
[[session]]
name = "bench"
input = ["a0"]
rate = {rate}
output = {{ type = "tap", name = "mirror0" }}
"""

CLONE_NEWNET = 0x40000000
TOP_SPEED = 1e7  # frames/s no lab here reaches: sizes trafgen's --num


@dataclasses.dataclass(frozen=True)
class Mode:
    label: str
    kind: str  # "xdp", "bridge" or "mirred"
    rate: int | None = None  # the session's sampling rate; None: no session
    daemon_stopped: bool = False
    target: float | None = None  # forwarded vs mirroring off
    filter: str | None = None  # the session's capture filter (bench/filter.py)


OFF = Mode("xdp: mirroring off", "xdp")
CONTROL = Mode("xdp: mirroring off, 2nd lab (control)", "xdp")
MIRRED = Mode("kernel: bridge + tc mirred", "mirred")
MODES = (OFF, CONTROL,
         Mode("xdp: rate 1, daemon draining", "xdp", rate=1),
         Mode("xdp: rate 1, daemon stopped", "xdp", rate=1, daemon_stopped=True, target=0.95),
         Mode("xdp: rate 100, daemon draining", "xdp", rate=100, target=0.99),
         Mode("kernel: bridge", "bridge"),
         MIRRED)


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")  # within the data, even for 2 or 3
    return q1, q2, q3


def netns_inode(pid: int | str) -> int | None:
    try:
        return int(os.readlink(f"/proc/{pid}/ns/net").split("[")[1].rstrip("]"))
    except (OSError, IndexError, ValueError):
        return None


class NetDev:
    """Packet counters of the devices of one network namespace, from a /proc/net/dev opened
    inside it (by a thread that enters the namespace and ends: the open file stays bound to
    that namespace, and this process never leaves its own)."""

    def __init__(self, ns: str) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        box: dict[str, object] = {}

        def enter_and_open() -> None:
            try:
                fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), f"setns {ns}")
                finally:
                    os.close(fd)
                box["f"] = open("/proc/thread-self/net/dev")
            except OSError as e:
                box["e"] = e

        t = threading.Thread(target=enter_and_open)
        t.start()
        t.join()
        if "e" in box:
            raise box["e"]  # type: ignore[misc]
        self.f = box["f"]

    COLUMNS = {"rx_packets": 1, "rx_dropped": 3, "tx_packets": 9, "tx_dropped": 11}

    def counter(self, dev: str, column: str) -> int:
        self.f.seek(0)
        for line in self.f.read().splitlines()[2:]:
            name, rest = line.split(":", 1)
            if name.strip() == dev:
                return int(rest.split()[self.COLUMNS[column]])
        raise KeyError(dev)

    def close(self) -> None:
        self.f.close()


class Owned:
    """Everything one run makes, and its teardown.  A process is killed by its handle
    (trafgen by its process group while the leader is our unreaped child, so the group id
    cannot name anyone else's); whatever still runs inside one of our namespaces after
    that is ours by construction, and the sweep kills it before the namespaces go."""

    def __init__(self, tag: str, work: Path) -> None:
        self.tag, self.work = tag, work
        self.netns: dict[str, int | None] = {}  # name -> inode
        self.groups: list[subprocess.Popen] = []  # trafgen: session and group leaders
        self.procs: list[subprocess.Popen] = []  # forwarders, daemons, TAP readers
        self.files: list[NetDev] = []

    def add_netns(self, name: str) -> None:
        self.netns[name] = None  # first: an interrupt right after `ip netns add` still deletes it
        sh("ip", "netns", "add", name)
        self.netns[name] = os.stat(f"/run/netns/{name}").st_ino

    def popen(self, what: str, cmd: list[str], group: bool = False, **kw) -> subprocess.Popen:
        """A process in a session of its own: a Ctrl-C in the terminal reaches only the
        bench, which then tears down in order."""
        p = subprocess.Popen(cmd, start_new_session=True, **kw)
        p.what = what  # type: ignore[attr-defined]
        (self.groups if group else self.procs).append(p)
        return p

    def ours(self) -> dict[int, str]:
        """pid: command line of every process inside one of our namespaces or naming our tag."""
        inodes = {i for i in self.netns.values() if i is not None}
        me = os.getpid()
        found = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            if int(pid) == me:
                continue
            try:
                cmd = (Path("/proc") / pid / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if not cmd:  # kernel threads and zombies
                continue
            if self.tag in cmd or netns_inode(pid) in inodes:
                found[int(pid)] = cmd.strip()
        return found

    def close(self) -> list[str]:
        """Tear everything down; return what is still there (empty when all went)."""
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            for f in self.files:
                f.close()
            for p in self.groups:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)  # SIGKILL ends a stopped process too
            for p in self.procs:  # forwarders and daemons may be stopped: wake them to exit cleanly
                if p.poll() is None:
                    p.send_signal(signal.SIGCONT)
                    p.send_signal(signal.SIGTERM)
            for p in self.groups + self.procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            # a trafgen worker whose leader exited on its own, anything started in the window
            # of an interrupt: still inside our namespaces, so ours
            deadline = time.monotonic() + 15
            while (strays := self.ours()) and time.monotonic() < deadline:
                for pid in strays:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.1)
            for ns in self.netns:
                sh("ip", "netns", "del", ns, check=False)
            shutil.rmtree(self.work, ignore_errors=True)
            left = [f"process {pid}: {cmd}" for pid, cmd in self.ours().items()]
            listed = sh("ip", "netns", "list").stdout.split()
            left += [f"netns {w}" for w in listed if self.tag in w]
            left += [f"dir {d}" for d in Path("/dev/shm").glob(f"mirrord-fbench-{self.tag}-*")]
            return left
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def on_cpu(cpu: int):
    """Processes started inside inherit this CPU (every thread they make too)."""
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


def wait_line(p: subprocess.Popen, want: str, timeout: float) -> None:
    """Wait, bounded, for a line starting with `want` on p's stdout."""
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if sel.select(max(0.0, deadline - time.monotonic())):
                line = p.stdout.readline()
                if not line:
                    raise RuntimeError(f"{p.args}: exited ({p.wait()}) before {want!r}")
                if line.startswith(want):
                    return
        raise RuntimeError(f"{p.args}: no {want!r} within {timeout} s")
    finally:
        sel.close()


class Lab:
    """One mode's namespaces and processes.  Its processes are started running; `freeze`
    stops them all (trafgen's group first), `thaw` lets them go on (trafgen's last)."""

    def __init__(self, own: Owned, mode: Mode, n: int, args: argparse.Namespace, tools: dict[str, Path]) -> None:
        self.own, self.mode, self.args = own, mode, args
        tag = own.tag
        self.src, self.fwd, self.sink = (f"mrb{x}-{tag}{n}" for x in "sfk")
        self.dir = own.work / f"lab{n}"
        self.dir.mkdir()
        self.frozen: list[subprocess.Popen] = []  # stopped outside the lab's slice, with trafgen
        self.forwarder: subprocess.Popen | None = None
        self.daemon = None
        self.mirror: tuple[str, str] | None = None  # (device, counter) of the mirror TAP
        for ns in (self.src, self.fwd, self.sink):
            own.add_netns(ns)
        sh("ip", "link", "add", "s0", "netns", self.src, "type", "veth", "peer", "name", "a0", "netns", self.fwd)
        sh("ip", "link", "add", "b0", "netns", self.fwd, "type", "veth", "peer", "name", "k0", "netns", self.sink)
        for ns, dev in ((self.src, "s0"), (self.fwd, "a0"), (self.fwd, "b0"), (self.sink, "k0")):
            sh("ip", "-n", ns, "link", "set", dev, "addrgenmode", "none", "up")
        self.k0, self.fwd_dev = NetDev(self.sink), NetDev(self.fwd)
        own.files += [self.k0, self.fwd_dev]
        if mode.kind == "xdp":
            self._xdp(tools)
        else:
            self._kernel(tools)
        self._flood(tools)

    def _xdp(self, tools: dict[str, Path]) -> None:
        from fixtures.daemon import DaemonProc

        session = SESSION.format(rate=self.mode.rate) if self.mode.rate else ""
        if session and self.mode.filter is not None:
            session += f"filter = {json.dumps(self.mode.filter)}\n"
        d = self.daemon = DaemonProc(self.dir, session, netns=self.fwd)
        try:
            with on_cpu(self.args.mirror_cpu):
                d.start(timeout=30)
        finally:
            if d.proc is not None:
                self.own.procs.append(d.proc)
        # readiness without leaning on the forwarder's output format: every ring file it
        # made is attached by the daemon (below), and frames reach k0 (in _flood)
        with on_cpu(self.args.work_cpu):
            self.forwarder = self.own.popen(
                "mirrord forward", ["ip", "netns", "exec", self.fwd, sys.executable, "-m", "mirrord", "forward",
                                    "-c", str(d.cfg), "--pair", "a0:b0"],
                stdout=open(self.dir / "forward.out", "w"), stderr=open(self.dir / "forward.log", "w"))

        def attached(st: dict) -> bool:
            if self.forwarder.poll() is not None:
                raise RuntimeError(f"{self.mode.label}: mirrord forward exited ({self.forwarder.returncode}):\n"
                                   + (self.dir / "forward.out").read_text() + (self.dir / "forward.log").read_text())
            rings = list(d.run_dir.glob("*.ring"))
            return bool(rings) and len(st["rings"]) >= len(rings)

        d.wait_for(attached, timeout=30, what=f"{self.mode.label}: the forwarder's rings attached")
        if self.mode.rate:
            self.mirror = ("mirror0", "rx_packets")  # the daemon writes each copy into its TAP
        if self.mode.daemon_stopped:
            d.proc.send_signal(signal.SIGSTOP)  # for the whole run; the teardown wakes it
        else:
            self.frozen.append(d.proc)
        self.frozen.append(self.forwarder)

    def _kernel(self, tools: dict[str, Path]) -> None:
        ns = ("ip", "-n", self.fwd)
        sh(*ns, "link", "add", "br0", "type", "bridge")
        for dev in ("a0", "b0"):
            sh(*ns, "link", "set", dev, "master", "br0")
        sh(*ns, "link", "set", "br0", "addrgenmode", "none", "up")
        if self.mode.kind != "mirred":
            return
        with on_cpu(self.args.mirror_cpu):
            reader = self.own.popen("tap_read", ["ip", "netns", "exec", self.fwd, str(tools["tap_read"]), "m0"],
                                    stdout=subprocess.PIPE, stderr=open(self.dir / "tap_read.log", "w"), text=True)
        wait_line(reader, "ready", 20)
        sh(*ns, "link", "set", "m0", "addrgenmode", "none", "up")
        tc = ("ip", "netns", "exec", self.fwd, "tc")
        sh(*tc, "qdisc", "add", "dev", "a0", "clsact")
        # u32 "match everything" (this kernel has no matchall classifier built in)
        sh(*tc, "filter", "add", "dev", "a0", "ingress", "protocol", "all", "u32", "match", "u32", "0", "0",
           "action", "mirred", "egress", "mirror", "dev", "m0")
        self.mirror = ("m0", "tx_packets")  # tc mirred transmits each copy on it, to the reader
        self.frozen.append(reader)

    def _flood(self, tools: dict[str, Path]) -> None:
        """Start trafgen, see frames reach k0 (and the mirror), then freeze the lab."""
        a = self.args
        num = int(TOP_SPEED * (a.rounds + a.warmup) * (a.settle + a.slice)) + 1_000_000
        # --cpus 1: one worker, which trafgen binds to CPU 0; -Q: leave IRQ affinities alone
        self.trafgen = self.own.popen("trafgen", ["ip", "netns", "exec", self.src, "trafgen", "--dev", "s0", "--conf",
                                                  str(tools["frame"]), "--num", str(num), "--cpus", "1", "-q", "-Q",
                                                  "-C"], group=True,
                                      stdout=subprocess.DEVNULL, stderr=open(self.dir / "trafgen.log", "w"))
        f0, m0 = self.counts()
        deadline = time.monotonic() + 20
        while True:
            self.check()
            f, m = self.counts()
            # (a filter may match nothing: no copy is expected then)
            if f - f0 > 1000 and (self.mirror is None or self.mode.daemon_stopped or self.mode.filter is not None
                                  or m - m0 > 10):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.mode.label}: {f - f0} frames forwarded, {m - m0} copies mirrored "
                                   "in 20 s of flooding")
            time.sleep(0.05)
        self.freeze()

    def check(self) -> None:
        for p in [self.trafgen, *self.frozen]:
            if p.poll() is not None:
                raise RuntimeError(f"{self.mode.label}: {p.what} exited with {p.returncode}")

    def counts(self) -> tuple[int, int]:
        return (self.k0.counter("k0", "rx_packets"),
                self.fwd_dev.counter(*self.mirror) if self.mirror else 0)

    def freeze(self) -> None:
        os.killpg(self.trafgen.pid, signal.SIGSTOP)  # the leader and its worker
        for p in self.frozen:
            p.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        for p in self.frozen:
            p.send_signal(signal.SIGCONT)
        os.killpg(self.trafgen.pid, signal.SIGCONT)

    def slice(self) -> tuple[float, float]:
        """(frames forwarded/s, copies mirrored/s) of this lab running alone for one slice."""
        self.check()  # also: the leader is unreaped, so its group id is still ours
        self.thaw()
        try:
            time.sleep(self.args.settle)
            (f0, m0), t0 = self.counts(), time.perf_counter()
            time.sleep(self.args.slice)
            (f1, m1), t1 = self.counts(), time.perf_counter()
        finally:
            self.freeze()
        return (f1 - f0) / (t1 - t0), (m1 - m0) / (t1 - t0)

    def accounting(self) -> str | None:
        """What the run lost where, in counters: the forwarder's final ones for a0 (it
        prints them as JSON when stopped); for tc mirred, the mirror TAP's."""
        if self.mode is MIRRED:
            return " ".join(f"m0 {c}={self.fwd_dev.counter('m0', c)}" for c in ("tx_packets", "tx_dropped"))
        if self.forwarder is None or self.forwarder.poll() is not None:
            return None
        self.forwarder.send_signal(signal.SIGCONT)
        self.forwarder.send_signal(signal.SIGTERM)
        self.forwarder.wait(20)
        # those this forwarder has: the kernel's own (xdp_*) came with its multi-buffer version
        keys = ("rx_packets", "tx_packets", "dropped_tx_full", "dropped_tx_down", "xdp_rx_dropped",
                "xdp_rx_ring_full", "mirror_filtered", "mirror_sampled", "mirror_pushed",
                "mirror_dropped_ring_full", "mirror_dropped_no_ring")
        for line in reversed((self.dir / "forward.out").read_text().splitlines()):
            with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError, StopIteration):
                b = next(b for b in json.loads(line)["bindings"] if b["ingress"] == "a0")
                return "a0 " + " ".join(f"{k}={b[k]}" for k in keys if k in b)
        return None


def build(work: Path) -> dict[str, Path]:
    tools = {"tap_read": work / "tap_read", "frame": work / "frame.cfg"}
    subprocess.run(["gcc", "-O2", "-o", str(tools["tap_read"]), str(ROOT / "bench/tap_read.c")], check=True)
    tools["frame"].write_text(FRAME)
    return tools


def measure(labs: list[Lab], args: argparse.Namespace) -> dict[Mode, tuple[list[float], list[float]]]:
    """Per-round rates of every lab: mode -> (forwarded/s, mirrored/s), index = round."""
    rates = {lab.mode: ([], []) for lab in labs}
    rng = random.Random(args.seed)
    order = list(labs)
    for rnd in range(args.warmup + args.rounds):
        # a new order every round: a drift within a round favours no lab, and no lab always
        # follows the same one (a slice after an AF_XDP lab finds the AF_XDP code in cache)
        rng.shuffle(order)
        for lab in order:
            f, m = lab.slice()
            if rnd >= args.warmup:
                rates[lab.mode][0].append(f)
                rates[lab.mode][1].append(m)
        if args.raw and rnd >= args.warmup:
            print(f"round {rnd - args.warmup}: " + " ".join(
                f"{rates[l.mode][0][-1] / 1e6:.3f}/{rates[l.mode][1][-1] / 1e6:.3f}" for l in labs), file=sys.stderr)
    return rates


def table(rates: dict[Mode, tuple[list[float], list[float]]], args: argparse.Namespace,
          accounting: dict[Mode, str]) -> str:
    off_f = rates[OFF][0]
    tc_m = rates[MIRRED][1]

    def ratio(xs: list[float], base: list[float]) -> tuple[str, str]:
        rs = [x / b for x, b in zip(xs, base) if b > 0]
        if not rs:
            return "-", ""
        q1, q2, q3 = quartiles(rs)
        return f"{q2:.3f}", f"{q1:.3f}-{q3:.3f}"

    out = ["| mode | forwarded/s | vs off | q1-q3 | target | verdict | mirrored/s | mirrored per forwarded "
           "| mirrored vs tc mirred | q1-q3 |",
           "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for mode, (fwd, mir) in rates.items():
        vs_off, q_off = ("1 (baseline)", "") if mode is OFF else ratio(fwd, off_f)
        target = verdict = ""
        if mode.target is not None:
            target = f">= {mode.target:.2f}"
            verdict = "MISS" if vs_off == "-" or float(vs_off) < mode.target else "PASS"
        if mode.rate is None and mode is not MIRRED:
            mir_s = per_fwd = vs_tc = q_tc = "-"
        else:
            mir_s = f"{statistics.median(mir) / 1e6:.3f}M"
            per_fwd = ratio(mir, fwd)[0]
            vs_tc, q_tc = ("1 (baseline)", "") if mode is MIRRED else ratio(mir, tc_m)
        out.append(f"| {mode.label} | {statistics.median(fwd) / 1e6:.3f}M | {vs_off} | {q_off} | {target} | "
                   f"{verdict} | {mir_s} | {per_fwd} | {vs_tc} | {q_tc} |")
    out += ["",
            f"{args.rounds} rounds (after {args.warmup} unmeasured); a round gives each lab one slice of "
            f"{args.slice * 1e3:g} ms (after {args.settle * 1e3:g} ms to settle) while every other lab is "
            f"stopped, in a random order (seed {args.seed}).",
            "forwarded: frames/s into k0 (its rx counter); mirrored: copies/s into the mirror TAP "
            "(rx of the daemon's mirror0, tx of tc mirred's m0 to its read() loop); medians over rounds.",
            "vs off, mirrored per forwarded, mirrored vs tc mirred: medians over rounds of the two rates "
            "of the same round; q1-q3: their quartiles.",
            f"64-byte frames from trafgen --cpus 1; AF_XDP in generic (skb) mode on veth; Linux "
            f"{platform.release()}, {args.ncpus} CPUs: trafgen and the kernel's receive path on CPU "
            f"{args.gen_cpu}, forwarders on CPU {args.work_cpu}, daemons and the TAP reader on CPU "
            f"{args.mirror_cpu}{' too' if args.mirror_cpu == args.work_cpu else ''}."]
    for mode, line in accounting.items():
        out.append(f"{mode.label}, over the whole run: {line}")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=400, help="measured rounds (default 400, about 90 s)")
    ap.add_argument("--warmup", type=int, default=3, help="rounds run first and not counted")
    ap.add_argument("--slice", type=float, default=0.02, help="measured part of a slice, seconds")
    ap.add_argument("--settle", type=float, default=0.005, help="from SIGCONT to the start of a slice, seconds")
    ap.add_argument("--seed", type=int, default=1, help="of the random order of the labs in each round")
    ap.add_argument("--quick", action="store_true", help="a short run for the test suite: 10 rounds, 1 warm-up")
    ap.add_argument("--raw", action="store_true", help="also print every round's rates (M/s) to stderr")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.warmup = 10, 1
    if args.rounds < 1 or args.warmup < 0 or args.slice <= 0 or args.settle < 0:
        print("forward.py: --rounds >= 1, --warmup >= 0, --slice > 0, --settle >= 0", file=sys.stderr)
        return 1
    if os.geteuid() != 0:
        print("forward.py: needs root (network namespaces, XDP)", file=sys.stderr)
        return 1
    for tool, pkg in (("trafgen", "netsniff-ng"), ("tc", "iproute2"), ("ip", "iproute2"), ("gcc", "gcc")):
        if shutil.which(tool) is None:
            print(f"forward.py: {tool} is not installed (Debian package {pkg})", file=sys.stderr)
            return 1

    # CPU plan: trafgen binds its one worker to CPU 0, where the kernel's receive path
    # (generic XDP, the bridge, tc) runs too; the forwarder gets the last CPU, the mirror's
    # consumers (daemon, TAP reader) the one before it, or the forwarder's on 2 CPUs; this
    # script stays on the first
    cpus = sorted(os.sched_getaffinity(0))
    args.gen_cpu, args.work_cpu, args.ncpus = cpus[0], cpus[-1], len(cpus)
    args.mirror_cpu = cpus[-2] if len(cpus) >= 3 else cpus[-1]
    os.sched_setaffinity(0, {args.gen_cpu})
    tag = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix=f"mirrord-fbench-{tag}-", dir="/dev/shm"))
    own = Owned(tag, work)
    print(f"forward.py: run {tag}: namespaces mrb[sfk]-{tag}*, directory {work}", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    out = None
    try:
        tools = build(work)
        labs = []
        for n, mode in enumerate(MODES):
            labs.append(Lab(own, mode, n, args, tools))
            print(f"forward.py: lab {n} up: {mode.label}", file=sys.stderr, flush=True)
        rates = measure(labs, args)
        for lab in labs:
            os.killpg(lab.trafgen.pid, signal.SIGKILL)
        accounting = {lab.mode: a for lab in labs if (a := lab.accounting())}
        out = table(rates, args, accounting)
    finally:
        left = own.close()
        if left:  # said here too when an error or an interrupt is on its way out
            print("forward.py: left behind:\n  " + "\n  ".join(left), file=sys.stderr)
    if out:
        print(out)
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
