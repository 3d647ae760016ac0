#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The capture filter's cost (issue 16), in one run (root): ns per frame of the filter in the
tap for 1-, 5- and 20-instruction programs, and the forwarding ratio of a session whose
filter matches nothing beside mirroring off.

1. The tap (bench/filter_bench.c, built with native/src/tap.c, ring.c, guard.c and -lpcap
   into a temporary directory): bursts of 32 64-byte IPv4/UDP frames to port 5000, offered
   to taps of session 7 at rate 4294967295 (no copy after frame 0), without a filter (twice:
   the second is the control row) and with programs every frame fails:
       1 instruction:  `ret #0` (by hand; libpcap refuses to compile an expression that
                       rejects everything, and `tcpdump -d ""` gives `ret #262144`)
       5 instructions: "arp or ip6"  (`tcpdump -d`: 5 lines; 4 run on an IPv4 frame)
       20 instructions: "udp port 53" (`tcpdump -d`: 20 lines; 13 run on UDP to port 5000)
   Sliced and interleaved: a repetition gives each case one slice, in a rotating order.
2. Forwarding (bench/forward.py's labs and slicing, 64-byte IPv4/UDP frames to port 5000
   from trafgen): `mirrord forward` with mirroring off, again (control), and with a session
   of rate 1 whose filter is "udp port 53" (it matches none of the frames: every frame runs
   the 20-instruction program, then is counted as filtered).  Target: >= 0.97 of mirroring
   off.

    python3 bench/filter.py                  # about 2 minutes
    python3 bench/filter.py --quick          # a short run (the test suite's)

Everything it makes carries one random tag (namespaces mrb{s,f,k}-TAG*, the directory
/dev/shm/mirrord-fbench-TAG-*); it leaves nothing behind, also on Ctrl-C, SIGTERM or an
error (bench/forward.py's teardown), checks that, and exits 1 if something is left.
Exits 0 whenever both parts ran and every count added up, whatever the verdicts.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

import forward as fb  # noqa: E402 - bench/forward.py: labs, slicing, teardown

SOURCES = ["native/src/tap.c", "native/src/ring.c", "native/src/guard.c", "bench/filter_bench.c"]
TARGET = 0.97
NOTHING = "udp port 53"  # the frames go to port 5000
MODES = (fb.OFF, fb.CONTROL,
         fb.Mode(f'xdp: rate 1, filter "{NOTHING}" matches nothing', "xdp", rate=1, filter=NOTHING, target=TARGET))
INSNS = {"none": "no filter", "none2": "no filter, 2nd tap (control)", "insn1": "`ret #0`",
         "insn5": '"arp or ip6"', "insn20": '"udp port 53"'}


def trafgen_frame() -> str:
    """64 bytes on the wire: Ethernet, IPv4 10.99.0.1 -> 10.99.0.2, UDP 4000 -> 5000."""
    from fixtures.frames import eth, ipv4_udp

    f = eth(0x0800, ipv4_udp(bytes(18), dport=5000))
    assert len(f) == 60
    return "{ " + ", ".join(f"0x{b:02x}" for b in f) + " }\n"


def tap_part(work: Path, frames: int, reps: int, cc: str) -> tuple[list[str], bool]:
    exe = work / "filter_bench"
    cmd = [cc, "-O2", "-std=gnu11", "-I", "native/include", *SOURCES, "-lpcap", "-lpthread", "-o", str(exe)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"build failed: {' '.join(cmd)}\n{r.stderr}")
    r = subprocess.run([str(exe), str(frames), str(reps)], capture_output=True, text=True, timeout=600)
    rows, checks = [], {}
    for line in r.stdout.splitlines():
        kind, *kv = line.split()
        f = dict(x.split("=", 1) for x in kv)
        if kind == "check":
            checks[f["case"]] = line
        elif kind == "result":
            rows.append(f)
    ok = r.returncode == 0 and len(rows) == len(INSNS) and all("ok=1" in c for c in checks.values())
    base = next(float(f["ns"]) for f in rows if f["case"] == "none") if rows else 0.0
    out = ["| tap case | program | instructions | ns/frame (median) | best | filter's cost (median - no filter) |",
           "|---|---|---:|---:|---:|---:|"]
    for f in rows:
        ns = float(f["ns"])
        out.append(f"| {f['case']} | {INSNS[f['case']]} | {f['insns']} | {ns:.2f} | {float(f['best']):.2f} | "
                   f"{ns - base:+.2f} |")
    out.append(f"{reps} repetitions of {frames} frames per case (medians over repetitions), bursts of 32 "
               "60-byte frames (64 on the wire), no ring, rate 4294967295.")
    out += [f"check: {c}" for c in checks.values()]
    if r.returncode and not rows:
        out.append(f"filter_bench failed ({r.returncode}): {r.stderr.strip()}")
    return out, ok


def forward_part(own: fb.Owned, args: argparse.Namespace) -> tuple[list[str], bool]:
    tools = fb.build(own.work)
    tools["frame"].write_text(trafgen_frame())
    labs = []
    for n, mode in enumerate(MODES):
        labs.append(fb.Lab(own, mode, n, args, tools))
        print(f"filter.py: lab {n} up: {mode.label}", file=sys.stderr, flush=True)
    rates = fb.measure(labs, args)
    for lab in labs:
        os.killpg(lab.trafgen.pid, signal.SIGKILL)
    acct = {lab.mode: lab.accounting() for lab in labs}
    off = rates[fb.OFF][0]
    out = ["| forwarding mode | forwarded/s | vs off | q1-q3 | target | verdict |", "|---|---:|---:|---:|---:|---|"]
    for mode, (fwd, _) in rates.items():
        vs, q, verdict = "1 (baseline)", "", ""
        if mode is not fb.OFF:
            rs = [x / b for x, b in zip(fwd, off) if b > 0]
            q1, q2, q3 = fb.quartiles(rs) if rs else (0.0, 0.0, 0.0)
            vs, q = f"{q2:.3f}", f"{q1:.3f}-{q3:.3f}"
            if mode.target is not None:
                verdict = "PASS" if q2 >= mode.target else "MISS"
        target = f">= {mode.target:.2f}" if mode.target is not None else ""
        out.append(f"| {mode.label} | {statistics.median(fwd) / 1e6:.3f}M | {vs} | {q} | {target} | {verdict} |")
    out.append(f"{args.rounds} rounds (after {args.warmup} unmeasured), a slice of {args.slice * 1e3:g} ms per lab "
               f"and round (after {args.settle * 1e3:g} ms to settle), the others stopped; random order per round "
               f"(seed {args.seed}); ratios: medians over rounds of the two labs' rates in the same round.")
    ok = True
    for mode, line in acct.items():
        out.append(f"{mode.label}, over the whole run: {line}")
        c = dict(kv.split("=") for kv in (line or "").split()[1:])
        c = {k: int(v) for k, v in c.items()}
        if not c:
            ok = False
            continue
        # every frame the filter session saw was filtered; nothing sampled, nothing lost
        if mode.filter is not None:
            ok &= c["mirror_filtered"] == c["rx_packets"] and c["mirror_sampled"] == 0
        ok &= c["mirror_sampled"] == c["mirror_pushed"] + c["mirror_dropped_ring_full"] + c["mirror_dropped_no_ring"]
    return out, ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=2_000_000, help="tap: frames per slice (default 2000000)")
    ap.add_argument("--reps", type=int, default=9, help="tap: repetitions, 1..64 (default 9)")
    ap.add_argument("--rounds", type=int, default=300, help="forwarding: measured rounds (default 300)")
    ap.add_argument("--warmup", type=int, default=3, help="forwarding: rounds run first and not counted")
    ap.add_argument("--slice", type=float, default=0.02, help="forwarding: measured part of a slice, seconds")
    ap.add_argument("--settle", type=float, default=0.005, help="forwarding: from SIGCONT to the slice, seconds")
    ap.add_argument("--seed", type=int, default=1, help="of the random order of the labs in each round")
    ap.add_argument("--cc", default=os.environ.get("CC", "gcc"))
    ap.add_argument("--quick", action="store_true", help="a short run for the test suite")
    args = ap.parse_args()
    args.raw = False
    if args.quick:
        args.frames, args.reps, args.rounds, args.warmup = 200_000, 3, 10, 1
    if not 1 <= args.reps <= 64 or args.frames < 32 or args.rounds < 1 or args.slice <= 0 or args.settle < 0:
        print("filter.py: --reps 1..64, --frames >= 32, --rounds >= 1, --slice > 0, --settle >= 0", file=sys.stderr)
        return 1
    if os.geteuid() != 0:
        print("filter.py: needs root (network namespaces, XDP)", file=sys.stderr)
        return 1
    for tool, pkg in (("trafgen", "netsniff-ng"), ("ip", "iproute2"), (args.cc, "gcc")):
        if shutil.which(tool) is None:
            print(f"filter.py: {tool} is not installed (Debian package {pkg})", file=sys.stderr)
            return 1
    # bench/forward.py's CPU plan: trafgen and the kernel's receive path on the first CPU, the
    # forwarders on the last, daemons on the one before it (or the last on 2 CPUs)
    cpus = sorted(os.sched_getaffinity(0))
    args.gen_cpu, args.work_cpu, args.ncpus = cpus[0], cpus[-1], len(cpus)
    args.mirror_cpu = cpus[-2] if len(cpus) >= 3 else cpus[-1]
    tag = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix=f"mirrord-fbench-{tag}-", dir="/dev/shm"))
    own = fb.Owned(tag, work)
    print(f"filter.py: run {tag}: namespaces mrb[sfk]-{tag}*, directory {work}", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    out: list[str] = []
    ok = False
    try:
        with fb.on_cpu(args.work_cpu):
            tap_out, tap_ok = tap_part(work, args.frames, args.reps, args.cc)
        print("filter.py: tap part done", file=sys.stderr, flush=True)
        os.sched_setaffinity(0, {args.gen_cpu})
        fwd_out, fwd_ok = forward_part(own, args)
        out, ok = tap_out + [""] + fwd_out, tap_ok and fwd_ok
    finally:
        left = own.close()
        if left:
            print("filter.py: left behind:\n  " + "\n  ".join(left), file=sys.stderr)
    print("\n".join(out))
    if not ok:
        print("filter.py: a count did not add up (see the check and accounting lines)", file=sys.stderr)
    return 1 if left or not ok else 0


if __name__ == "__main__":
    sys.exit(main())
