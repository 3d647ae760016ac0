#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The embeddable tap's cost per frame beside the pre-tap inline code, in one run.

Compiles bench/tap_bench.c with native/src/tap.c (its own translation unit: a real call,
as from libmirrord), ring.c and guard.c into a temporary directory, runs it and prints one
table: ns per frame of mr_tap__offer_burst and of the mirroring loop forward.c had inline
before the tap (a copy in tap_bench.c), interleaved, for session 0 (nothing mirrored),
rate 1 and rate 64, 64- and 1514-byte frames, bursts of 32.

    python3 bench/tap.py                     # about 5 s
    python3 bench/tap.py --frames 4000000 --reps 11

The issue's target: the library call costs no more than the inline path, within noise.
The verdict compares the best repetitions (the least disturbed on a shared machine):
"ok" when tap_best <= 1.10 x inline_best.  Exits 0 whenever the benchmark ran.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["native/src/tap.c", "native/src/ring.c", "native/src/guard.c", "bench/tap_bench.c"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=2_000_000, help="frames per repetition (default 2000000)")
    ap.add_argument("--reps", type=int, default=7, help="repetitions, 1..64 (default 7)")
    ap.add_argument("--cc", default=os.environ.get("CC", "gcc"))
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tap-bench-") as d:
        exe = Path(d) / "tap_bench"
        cmd = [a.cc, "-O2", "-std=gnu11", "-I", "native/include", *SOURCES, "-lpthread", "-o", str(exe)]
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if r.returncode:
            print(f"tap.py: build failed: {' '.join(cmd)}\n{r.stderr}", file=sys.stderr)
            return 1
        r = subprocess.run([str(exe), str(a.frames), str(a.reps)], capture_output=True, text=True)
        if r.returncode:
            print(f"tap.py: tap_bench failed: {r.stderr.strip()}", file=sys.stderr)
            return 1
    rows, bad = [], []
    for line in r.stdout.splitlines():
        kind, *kv = line.split()
        f = dict(x.split("=", 1) for x in kv)
        if kind == "check" and f["ok"] != "1":
            bad.append(line)
        if kind == "result":
            rows.append(f)
    head = f"{'case':<8}{'bytes':>6}{'tap ns':>9}{'inline ns':>11}{'ratio':>7}{'tap best':>10}" \
           f"{'inl best':>10}{'ratio':>7}  verdict"
    print(head)
    for f in rows:
        t, i, tb, ib = (float(f[k]) for k in ("tap", "inline", "tap_best", "inline_best"))
        verdict = "ok" if tb <= 1.10 * ib else "SLOWER"
        print(f"{f['case']:<8}{f['bytes']:>6}{t:>9.2f}{i:>11.2f}{t / i:>7.2f}{tb:>10.2f}{ib:>10.2f}"
              f"{tb / ib:>7.2f}  {verdict}")
    for line in bad:
        print(f"accounting check failed: {line}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
