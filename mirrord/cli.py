"""Command line: ``mirrord <command>``.  Errors a user can cause are one line, not a traceback."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path


def _cmd_ring_stat(args: argparse.Namespace) -> int:
    from mirrord.ring import RingError, probe

    rc = 0
    rows = []
    for path in args.paths:
        try:
            k = probe(path)
        except RingError as e:  # the message already names the file and the reason
            print(f"mirrord: {e.strerror}", file=sys.stderr)
            rc = 1
            continue
        except OSError as e:
            print(f"mirrord: {path}: {e.strerror}", file=sys.stderr)
            rc = 1
            continue
        rows.append((str(path), k))
    if args.json:
        print(json.dumps({p: {**dataclasses.asdict(k), "offered": k.offered,
                              "fill_bytes": k.fill_bytes} for p, k in rows}, indent=2))
        return rc
    if rows:
        print(f"{'ring':<32} {'offered':>12} {'pushed':>12} {'ring_full':>10} {'consumed':>12} "
              f"{'corrupt':>8} {'fill':>7} {'pid':>7}")
    for path, k in rows:
        fill = 100.0 * k.fill_bytes / k.data_size
        print(f"{Path(path).name:<32} {k.offered:>12} {k.pushed_packets:>12} "
              f"{k.dropped_ring_full_packets:>10} {k.consumed_packets:>12} "
              f"{k.corrupt_events:>8} {fill:>6.1f}% {k.producer_pid:>7}")
    return rc


def _cmd_check_config(args: argparse.Namespace) -> int:
    from mirrord.config import ConfigError, load

    try:
        cfg = load(args.file)
    except ConfigError as e:
        print(f"mirrord: {e}", file=sys.stderr)
        return 1
    n = len(cfg.sessions)
    print(f"{args.file}: OK, {n} session{'s' if n != 1 else ''}")
    for s in cfg.sessions:
        rate = "every frame" if s.rate <= 1 else f"1 in {s.rate}"
        print(f"  {s.name} (id {s.id:#010x}): {', '.join(s.input)} -> {s.output.type} "
              f"{s.output.name}, {rate}, run_length {s.run_length}, "
              f"max_packet_length {s.max_packet_length or 'whole frame'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from mirrord import __version__

    ap = argparse.ArgumentParser(prog="mirrord", description="port-mirroring sidecar")
    ap.add_argument("--version", action="version", version=f"mirrord {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file", type=Path)
    check.set_defaults(func=_cmd_check_config)

    ring = sub.add_parser("ring-stat", help="show the counters of ring files (read-only)")
    ring.add_argument("paths", nargs="+", type=Path, metavar="RING")
    ring.add_argument("--json", action="store_true", help="machine-readable output")
    ring.set_defaults(func=_cmd_ring_stat)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
