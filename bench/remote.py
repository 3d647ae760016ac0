#!/usr/bin/env python3
"""Remote outputs: VXLAN copies per second from the daemon's C drain (mr_cons__drain,
DRAIN_ENCAP: encapsulated on a raw socket, sendmmsg batches) vs a plain C sendmmsg(2) loop
of same-size UDP datagrams on a connected UDP socket, into one UDP collector, in one run
(root; inside a network namespace it creates, on its loopback).

Sliced and interleaved (bench/remote_bench.c): the sinks take turns in one process, one
slice each per round (2 ms to settle, then --slice ms measured), in an order that turns
every round; the ring is topped up, untimed, before each drain slice.  The ratio is the
median over rounds of drain / baseline of the same round, with its quartiles; the noise of
a shared VM comes in waves of seconds, and slices milliseconds apart see the same machine.
A second copy of the baseline loop is the control row: its ratio to the first says how
far the method itself is from 1.00.  Target: >= 0.90 at 64 and 1514 bytes.

What the baseline does not do and the drain does: read each copy from the ring (the
baseline sends one cache-hot buffer), hash its flow for the UDP source port, write the
VXLAN header, and route each datagram (a raw socket routes every send; a connected UDP
socket keeps its route).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = (64, 1514)


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4)
    return q[0], statistics.median(xs), q[2]


def run(exe: Path, ns: str, size: int, rounds: int, slice_ms: float) -> dict[str, list[float]]:
    out = subprocess.run(["ip", "netns", "exec", ns, str(exe), str(size), str(rounds), str(slice_ms)],
                         capture_output=True, text=True, timeout=60 + rounds * slice_ms * 0.01)
    if out.returncode:
        raise RuntimeError(f"remote_bench {size}: {out.stderr.strip()}")
    rates: dict[str, list[float]] = {"encap": [], "base": [], "control": []}
    for line in out.stdout.splitlines():
        kv = dict(x.split("=") for x in line.split())
        for k in rates:
            rates[k].append(float(kv[k]))
    return rates


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=200, help="rounds of slices")
    ap.add_argument("--slice", type=float, default=20.0, help="milliseconds measured per slice")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("remote.py: needs root (a network namespace, raw sockets)", file=sys.stderr)
        return 2
    ns = f"mrb-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="mirrord-remote-bench-"))
    print(f"remote.py: namespace {ns}, directory {work}", file=sys.stderr, flush=True)
    made = False
    try:
        exe = work / "remote_bench"
        srcs = [str(ROOT / "native/src" / f) for f in ("ring.c", "guard.c", "drain.c", "encap.c")]
        subprocess.run(["gcc", "-O2", "-std=gnu11", f"-I{ROOT / 'native/include'}", "-o", str(exe),
                        str(ROOT / "bench/remote_bench.c"), *srcs, "-lpthread"], check=True)
        subprocess.run(["ip", "netns", "add", ns], check=True)
        made = True
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        print(f"{'row':<58} {'size':>5} {'rounds':>6} {'sink':>8} {'base':>8} {'ratio':>6} {'q1-q3':>11}")
        for size in SIZES:
            r = run(exe, ns, size, args.rounds, args.slice)
            for label, a, b, judged in (
                    ("sliced, encap drain vs C sendmmsg() of UDP datagrams", r["encap"], r["base"], True),
                    ("sliced, control: a 2nd C sendmmsg() vs C sendmmsg()", r["control"], r["base"], False)):
                ratios = [x / y for x, y in zip(a, b) if y > 0]
                q1, med, q3 = quartiles(ratios)
                verdict = f"  >= 0.90 {'PASS' if med >= 0.90 else 'MISS'}" if judged else ""
                print(f"{label:<58} {size:>5} {len(ratios):>6} {statistics.median(a) / 1e6:>7.3f}M "
                      f"{statistics.median(b) / 1e6:>7.3f}M {med:>6.2f} {q1:>5.2f}-{q3:<5.2f}{verdict}", flush=True)
        return 0
    finally:
        if made:
            subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
