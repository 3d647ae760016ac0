#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Mirror ring benchmark runner.

Compiles bench/ring_bench.c together with native/src/ring.c and guard.c into a temporary
directory, runs it, and prints one table: producer push cost against a plain memcpy, and end-to-end
records/s between two pinned threads against simple baselines, with the targets of the
issue (push <= 30 ns per 64-byte record, >= 5 M records/s end to end for 64-byte frames).

    python3 bench/ring.py                 # the table (about 10-15 s)
    python3 bench/ring.py --json          # the same facts as JSON
    python3 bench/ring.py --records 200000 --reps 3 --e2e-ms 100   # quicker

Needs only python3 and a C compiler (gcc).  A MISS never makes it fail: it exits 0
whenever the benchmark ran, 1 when it could not be built or run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["native/src/ring.c", "native/src/guard.c", "bench/ring_bench.c"]
CFLAGS = ["-O2", "-std=gnu11", "-I", "native/include"]
LIBS = ["-lpthread"]

TARGET_PUSH_NS = 30.0          # push <= 30 ns per 64-byte record
TARGET_E2E_RATE = 5_000_000.0  # >= 5 M records/s end to end, 64-byte frames


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000,
                    help="records per single-thread measurement (default 1000000)")
    ap.add_argument("--reps", type=int, default=5,
                    help="repetitions of every measurement; median and best are shown (default 5)")
    ap.add_argument("--e2e-ms", type=int, default=200,
                    help="length of one two-thread run in ms (default 200)")
    ap.add_argument("--only", choices=("all", "push", "e2e"), default="all",
                    help="run only the push-cost or the end-to-end part")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--raw", action="store_true",
                    help="also print the benchmark's own key=value lines (to stderr)")
    ap.add_argument("--cc", default=os.environ.get("CC", "gcc"), help="C compiler (default $CC or gcc)")
    ap.add_argument("--build-dir", type=Path,
                    help="build here and keep the binary (default: a temporary directory)")
    a = ap.parse_args(argv)
    if a.records < 32:
        ap.error("--records must be at least 32")
    if not 1 <= a.reps <= 64:
        ap.error("--reps must be between 1 and 64")
    if a.e2e_ms < 1:
        ap.error("--e2e-ms must be at least 1")
    return a


def build(cc: str, outdir: Path) -> Path:
    exe = outdir / "ring_bench"
    cmd = [cc, *CFLAGS, *SOURCES, *LIBS, "-o", str(exe)]
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    except FileNotFoundError:
        raise SystemExit(f"ring.py: C compiler {cc!r} not found (install gcc or pass --cc)")
    if r.returncode != 0:
        sys.stderr.write(r.stdout + r.stderr)
        raise SystemExit(f"ring.py: build failed: {' '.join(cmd)}")
    return exe


def run(exe: Path, a: argparse.Namespace) -> list[str]:
    cmd = [str(exe), str(a.records), str(a.reps), str(a.e2e_ms), a.only]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if a.raw:
        sys.stderr.write(r.stdout)
    if r.returncode != 0:
        sys.stderr.write(r.stderr)
        raise SystemExit(f"ring.py: benchmark exited with status {r.returncode}")
    return r.stdout.splitlines()


def kv(fields: list[str]) -> dict[str, str]:
    return dict(f.split("=", 1) for f in fields if "=" in f)


def parse(lines: list[str]) -> dict:
    info: dict[str, str] = {}
    results: dict[tuple[str, int], dict] = {}
    checks: list[dict] = []
    samples: list[dict] = []
    for line in lines:
        kind, *fields = line.split()
        d = kv(fields)
        if kind == "info":
            info.update(d)
        elif kind == "result":
            results[(d["id"], int(d["bytes"]))] = {
                "unit": d["unit"],
                "median": float(d["median"]),
                "best": float(d["best"]),
                "worst": float(d["worst"]),
                "samples": [float(x) for x in d["samples"].split(",")],
            }
        elif kind == "check":
            checks.append(d)
        elif kind == "sample":
            samples.append(d)
    return {"info": info, "results": results, "checks": checks, "samples": samples}


def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "ns_rec":
        return f"{v:.1f} ns"
    if unit == "rec_s":
        return f"{v / 1e6:.2f} M/s"
    if unit == "ratio":
        return f"{100 * v:.1f} %"
    return f"{v:.4g}"


def verdict(median: float, best: float, ok) -> str:
    """Judged on the median; a noisy machine may still reach the target at its best."""
    if ok(median):
        return "PASS"
    return "MISS (best PASS)" if ok(best) else "MISS"


def rows_from(p: dict) -> list[dict]:
    res = p["results"]
    rows: list[dict] = []

    def get(i, b):
        return res.get((i, b))

    def row(name, b, ours, base=None, target="-", ok=None, base_label=""):
        r = {
            "measurement": name,
            "bytes": b,
            "unit": ours["unit"],
            "ours": ours["median"],
            "best": ours["best"],
            "baseline": base["median"] if base else None,
            "baseline_is": base_label if base else "",
            "ratio": (ours["median"] / base["median"]) if base and base["median"] else None,
            "target": target,
            "verdict": verdict(ours["median"], ours["best"], ok) if ok else "-",
            "samples": ours["samples"],
        }
        rows.append(r)

    for b in (64, 1514):
        mc = get("memcpy", b)
        if get("push_single", b):
            tgt = b == 64
            row("push, single (mr_prod__push)", b, get("push_single", b), mc,
                f"<= {TARGET_PUSH_NS:g} ns" if tgt else "-",
                (lambda v: v <= TARGET_PUSH_NS) if tgt else None, "memcpy [a]")
            row("push, batch of 32 (reserve x32, submit)", b, get("push_batch", b), mc,
                base_label="memcpy [a]")
    if get("seqcst", 0):
        row("seq_cst store alone (per submit) [b]", 0, get("seqcst", 0))
    if get("pingpong", 0):
        row("cache-line round trip, CPU 0 <-> 1 [g]", 0, get("pingpong", 0))
    for b in (64, 1514):
        if not get("e2e_push", b):
            continue
        tgt = b == 64
        mc = get("e2e_memcpy", b)
        ok = (lambda v: v >= TARGET_E2E_RATE) if tgt else None
        row("e2e delivered, mr_prod__push [c]", b, get("e2e_push", b), mc,
            f">= {TARGET_E2E_RATE / 1e6:g} M/s" if tgt else "-", ok, "1-thread memcpy in+out [d]")
        row("  dropped (ring_full) / offered", b, get("e2e_push_drop", b))
        row("e2e delivered, batch of 32 [c]", b, get("e2e_batch", b), mc,
            f">= {TARGET_E2E_RATE / 1e6:g} M/s" if tgt else "-", ok, "1-thread memcpy in+out [d]")
        row("  dropped (ring_full) / offered", b, get("e2e_batch_drop", b))
        row("e2e mr_prod__push vs minimal SPSC [e]", b, get("e2e_push", b), get("e2e_spsc", b),
            base_label="2-thread minimal SPSC [e]")
        # accounting checks of every run of this size
        runs = [c for c in p["checks"] if c.get("bytes") == str(b) and "rep" in c
                and c["id"] in ("e2e_push", "e2e_batch")]
        bad = [c for c in runs if c.get("ok") != "1"]
        rows.append({
            "measurement": "  integrity [f]", "bytes": b, "unit": "", "ours": None, "best": None,
            "baseline": None, "baseline_is": "", "ratio": None, "target": "all runs",
            "verdict": "OK" if runs and not bad else "FAIL",
            "text": f"{len(runs) - len(bad)}/{len(runs)} runs ok",
        })
    return rows


LEGEND = """\
ours = median of the repetitions, best = fastest repetition; verdict judged on the median.
ratio = ours / baseline: for ns rows how many times the baseline's cost (lower is better),
        for M/s rows the fraction of the baseline's rate (higher is better).
[a] memcpy of the same frame into a 4 MiB buffer at the offsets a ring record would take
    (same stride, alignment and wrap), same bursts; the ring never fills (bursts of 7/8 of
    the data area, drained untimed in the same thread between bursts).
[b] the StoreLoad barrier of the wake-up protocol, paid by every submit: hdr->prod is
    stored seq_cst before need_wakeup is read (gcc emits xchg, a locked instruction).
[c] producer thread on CPU 0 offers copies for --e2e-ms, dropping on ring_full; consumer
    thread on CPU 1 polls mr_cons__peek(32) + mr_cons__release, checks every seq and the seq
    stamped into the first 8 frame bytes; rate = delivered / (first offer .. last consumed).
    A drop ratio of 0 % means the consumer kept up and the producer set the pace.
[d] one thread: memcpy in to a 4 MiB buffer + memcpy out, no ring, no second core.
[e] the same two pinned threads over a minimal SPSC ring of fixed 2 KiB slots (one
    release store per record, no counters, no validation, no wake-up); a reference only.
[f] per run: pushed + dropped == offered (== producer seq and header counters), consumer saw
    every pushed record once with strictly increasing seq, seq gaps == drops, payload ok.
[g] one cache line bounced between the two pinned threads: what each line handed from
    producer to consumer costs on this machine (it moves a lot with vCPU placement)."""


def table(p: dict, rows: list[dict]) -> str:
    head = ["measurement", "bytes", "ours", "best", "baseline", "ratio", "target", "verdict"]
    body = []
    for r in rows:
        u = r["unit"]
        body.append([
            r["measurement"],
            str(r["bytes"]) if r["bytes"] else "-",
            r.get("text") or fmt(r["ours"], u),
            fmt(r["best"], u) if r["best"] is not None else "",
            fmt(r["baseline"], u) if r["baseline"] is not None else "-",
            f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-",
            r["target"],
            r["verdict"],
        ])
    w = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    right = {1, 2, 3, 4, 5}

    def line(cells):
        return "  ".join(c.rjust(w[i]) if i in right else c.ljust(w[i])
                         for i, c in enumerate(cells)).rstrip()

    i = p["info"]
    out = [
        f"mirrord ring benchmark: {i.get('records')} records per push measurement, "
        f"{i.get('reps')} reps, {i.get('e2e_ms')} ms per end-to-end run, "
        f"{i.get('online_cpus')} CPUs online ({i.get('allowed_cpus')} allowed), "
        f"{int(i.get('ring_bytes', 0)) >> 20} MiB ring, {i.get('total_secs', '?')} s",
        line(head),
        line(["-" * x for x in w]),
    ]
    out += [line(b) for b in body]
    out += ["", LEGEND]
    if i.get("online_cpus") == "1":
        out.append("note: one CPU only, the end-to-end threads share it")
    return "\n".join(out)


def argv_is_default(a: argparse.Namespace) -> bool:
    return (a.records, a.reps, a.e2e_ms, a.only) == (1_000_000, 5, 200, "all")


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    cc = shutil.which(a.cc) or a.cc
    if a.build_dir:
        a.build_dir.mkdir(parents=True, exist_ok=True)
        ctx = None
        outdir = a.build_dir.resolve()
    else:
        ctx = tempfile.TemporaryDirectory(prefix="mirrord-ring-bench-")
        outdir = Path(ctx.name)
    try:
        print(f"ring.py: building with {a.cc} ...", file=sys.stderr)
        exe = build(cc, outdir)
        print("ring.py: running ..." + (" (about 10-15 s)" if argv_is_default(a) else ""),
              file=sys.stderr)
        lines = run(exe, a)
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 1
    finally:
        if ctx:
            ctx.cleanup()

    p = parse(lines)
    rows = rows_from(p)
    if a.json:
        doc = {
            "info": p["info"],
            "targets": {"push_ns_64": TARGET_PUSH_NS, "e2e_rec_s_64": TARGET_E2E_RATE},
            "rows": rows,
            "results": [{"id": k[0], "bytes": k[1], **v} for k, v in p["results"].items()],
            "checks": p["checks"],
        }
        print(json.dumps(doc, indent=2))
    else:
        print(table(p, rows))
    full = [c for c in p["checks"] if c.get("id") == "push" and c.get("ok") != "1"]
    if full:
        print("ring.py: WARNING: the ring filled during a push-cost measurement "
              f"({full}); those numbers include drops", file=sys.stderr)
    if any(r["verdict"] == "FAIL" for r in rows):
        print("ring.py: WARNING: an end-to-end accounting check failed (see --raw)",
              file=sys.stderr)
    return 0  # a benchmark never fails the test suite


if __name__ == "__main__":
    sys.exit(main())
