"""Command line: ``mirrord <command>``.  Errors a user can cause are one line, not a traceback."""
from __future__ import annotations

import argparse
import contextlib
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
    from mirrord import rundir

    rd = cfg.daemon.runtime_dir
    if rd.exists() and (why := rundir.check(rd, **rundir.as_owner(rd))):  # the daemon would refuse
        print(f"mirrord: {args.file}: [daemon]: key \"runtime_dir\": {why}", file=sys.stderr)
        return 1
    if why := rundir.check_control_socket(cfg.daemon.control_socket, rd, **rundir.as_owner(rd)):
        print(f"mirrord: {args.file}: [daemon]: key \"control_socket\": {why}", file=sys.stderr)
        return 1
    if args.strict and (missing := _missing_interfaces(cfg)):
        print(f"mirrord: {args.file}: --strict: {len(missing)} interface{'s' if len(missing) > 1 else ''} "
              f"missing now: {'; '.join(missing)}", file=sys.stderr)
        return 1
    n = len(cfg.sessions)
    print(f"{args.file}: OK, {n} session{'s' if n != 1 else ''}")
    for s in cfg.sessions:
        rate = "every frame" if s.rate <= 1 else f"1 in {s.rate}"
        print(f"  {s.name} (id {s.id:#010x}): {', '.join(s.input)} -> {s.output.type} "
              f"{s.output.name}, {rate}, run_length {s.run_length}, "
              f"max_packet_length {s.max_packet_length or 'whole frame'}")
        print(f"    filter: {s.filter!r} ({len(s.filter_program) // 8} BPF instructions)" if s.filter
              else "    filter: none (every frame)")
    return 0


def _cmd_import_junos(args: argparse.Namespace) -> int:
    """Exit 0: written (notes and warnings on stderr); 1: errors, or statements not
    understood without --skip-unknown (each listed; nothing written)."""
    import os

    from mirrord import junos

    def say(line: str) -> None:  # one line each, whatever a quoted Junos name holds
        line = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in line)
        print(f"mirrord: {line}", file=sys.stderr)

    try:
        mapping = junos.load_map(args.map_file) if args.map_file else {}
        for n, m in enumerate(args.map or [], 1):
            k, t = junos.parse_map_entry(m, f"--map #{n}")
            mapping[k] = t
        text = junos.read_file(args.file)
        res = junos.import_text(text, mapping, str(args.file))
    except junos.JunosError as e:
        say(str(e))
        return 1
    rep = res.report
    for line in rep.notes:
        say(f"note: {line}")
    for line in res.warnings:
        say(f"warning: {line}")
    for line in rep.unknown:
        say(f"{'skipped: ' if args.skip_unknown else ''}{line}")
    for line in rep.errors:
        say(line)
    if rep.errors:
        say(f"{args.file}: {len(rep.errors)} error{'s' if len(rep.errors) > 1 else ''}; nothing written")
        return 1
    if rep.unknown and not args.skip_unknown:
        say(f"{args.file}: {len(rep.unknown)} statement{'s' if len(rep.unknown) > 1 else ''} not understood "
            f"(listed above); nothing written (--skip-unknown imports without them)")
        return 1
    if res.unchecked:
        say(f"note: {res.unchecked}")
    doc = res.toml  # what --skip-unknown left out is written in it as comments
    n = len(res.sessions)
    if args.output is None:
        sys.stdout.write(doc)
        return 0
    import stat

    out = args.output
    try:
        target = os.stat(out).st_mode
    except OSError:
        target = None
    if target is not None and not stat.S_ISREG(target) and not stat.S_ISDIR(target):
        # a FIFO or a device (-o /dev/stdout, /dev/null): write into it; replacing it with a
        # file (as root, in /dev) would break every other user of that node
        try:
            with open(out, "w", encoding="utf-8") as f:
                f.write(doc)
        except OSError as e:
            say(f"{out}: cannot write: {e.strerror}")
            return 1
        print(f"{out}: {n} session{'s' if n != 1 else ''} from {args.file}", file=sys.stderr)
        return 0
    if out.is_symlink():  # replace the file it points to, not the link
        out = Path(os.path.realpath(out))
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(doc, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        say(f"{args.output}: cannot write: {e.strerror}")
        return 1
    print(f"{args.output}: {n} session{'s' if n != 1 else ''} from {args.file}", file=sys.stderr)
    return 0


def _missing_interfaces(cfg) -> list[str]:
    """What `check-config --strict` demands: every input and every ``interface`` output exists
    now (a tap or tun output is made by the daemon; a pair of the forwarder, or an output,
    whose interface is missing waits for it, which --strict forbids)."""
    import socket

    from mirrord.daemon.links import missing_inputs

    present = {name for _, name in socket.if_nameindex()}
    by_session: dict[str, list[str]] = {}
    for name, dev in missing_inputs(cfg.sessions):
        by_session.setdefault(name, []).append(f'session "{name}": input {dev}')
    for s in cfg.sessions:
        if s.output.type == "interface" and s.output.name not in present:
            by_session.setdefault(s.name, []).append(f'session "{s.name}": output {s.output.name}')
    return [m for s in cfg.sessions for m in by_session.get(s.name, [])]


DEFAULT_CONFIG = Path("/etc/mirrord/mirrord.toml")


def _setup_logging(verbose: bool) -> None:
    import logging

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="level=%(levelname)s logger=%(name)s %(message)s",
    )


def _cmd_run(args: argparse.Namespace) -> int:
    import uvloop

    from mirrord.config import ConfigError, load
    from mirrord.daemon import Daemon

    try:
        cfg = load(args.config)
    except ConfigError as e:
        print(f"mirrord: {e}", file=sys.stderr)
        return 1
    _setup_logging(args.verbose)
    daemon = Daemon(cfg, args.config)
    try:
        uvloop.run(daemon.run())
    except OSError as e:
        detail = e.strerror or str(e)
        print(f"mirrord: {e.filename}: {detail}" if e.filename else f"mirrord: {detail}", file=sys.stderr)
        return 1
    return 0


def _cmd_forward(args: argparse.Namespace) -> int:
    from mirrord.forwarder import run as forward

    pairs = []
    for p in args.pair:
        a, sep, b = p.partition(":")
        if not sep or not a or not b or a == b:
            print(f"mirrord: --pair {p!r}: must be A:B, two different interfaces", file=sys.stderr)
            return 1
        # a name the kernel can never give would be waited for forever (a missing interface waits)
        from mirrord.junos import linux_name_problem

        if why := next((f"{n!r} {w}" for n in (a, b) if (w := linux_name_problem(n))), None):
            print(f"mirrord: --pair {p!r}: {why}: not an interface name", file=sys.stderr)
            return 1
        pairs.append((a, b))
    _setup_logging(args.verbose)
    queues = tuple(range(args.queues)) if args.queues else (args.queue,)
    return forward.run(args.config, pairs, queues=queues, generic=not args.native,
                       ring_size=args.ring_size, ready_file=args.ready_file)


def _cmd_demo(args: argparse.Namespace) -> int:
    from mirrord.demo import demo

    return demo(count=args.count, size=args.size)


def _control_path(args: argparse.Namespace) -> Path:
    from mirrord.config import ConfigError, DaemonSettings, load

    if args.socket:
        return args.socket
    if args.config:
        try:
            return load(args.config).daemon.control_socket
        except ConfigError as e:
            raise SystemExit(f"mirrord: {e}") from None
    if DEFAULT_CONFIG.exists():
        with contextlib.suppress(ConfigError):
            return load(DEFAULT_CONFIG).daemon.control_socket
    return DaemonSettings().control_socket


def _cmd_status(args: argparse.Namespace) -> int:
    from mirrord.protocol import ControlClient

    path = _control_path(args)
    try:
        with ControlClient(path) as c:
            reply = c.request({"op": "status"})
    except OSError as e:
        print(f"mirrord: control socket {path}: {e.strerror or e}", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print(f"mirrord: {reply.get('error')}", file=sys.stderr)
        return 1
    st = reply["status"]
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    print(f"config {st['config']} generation {st['generation']} "
          f"last reload {'ok' if st['last_reload_ok'] else 'FAILED: ' + str(st['last_reload_error'])} "
          f"ready {'yes' if st.get('ready') else 'no (' + '; '.join(st.get('not_ready', [])) + ')'}")
    print()
    print(f"{'session':<16} {'output':<20} {'state':<6} {'mirrored':>10} {'bytes':>12} "
          f"{'no_output':>9} {'sink_err':>8} {'busy':>6} {'not_ip':>6}")
    for s in st["sessions"]:
        c = s["counters"]
        out = f"{s['output']['type']}:{s['output']['name']}"
        print(f"{s['name']:<16} {out:<20} {'up' if s['output']['open'] else 'DOWN':<6} "
              f"{c['mirrored_packets']:>10} {c['mirrored_bytes']:>12} {c['dropped_no_output']:>9} "
              f"{c['dropped_sink_error']:>8} {c['dropped_sink_busy']:>6} {c['dropped_not_ip']:>6}")
    for s in st["sessions"]:
        print(f"{s['name']}: filter {json.dumps(s['filter'])}" if s.get("filter")
              else f"{s['name']}: filter none (every frame)")
    for s in st["sessions"]:
        if not s["output"]["open"] and s["output"].get("error"):
            print(f"{s['name']}: output down: {s['output']['error']}")
        if s.get("last_sink_error"):
            print(f"{s['name']}: last sink error: {s['last_sink_error']}")
    collectors = [(s["name"], c) for s in st["sessions"] for c in s["output"].get("collectors", ())]
    if collectors:  # remote outputs (vxlan, geneve, erspan)
        print()
        print(f"{'session':<16} {'collector':<26} {'packets':>10} {'bytes':>12} {'busy':>6} "
              f"{'unreach':>7} {'error':>6} {'trunc_mtu':>9} {'icmp':>5} {'mtu':>5}  last error")
        for name, c in collectors:
            print(f"{name:<16} {c['address']:<26} {c['packets']:>10} {c['bytes']:>12} {c['dropped_busy']:>6} "
                  f"{c['dropped_unreachable']:>7} {c['dropped_error']:>6} {c['truncated_mtu']:>9} "
                  f"{c['icmp_errors']:>5} {c['mtu']:>5}  {c['last_error'] or '-'}"
                  + (f" (held down {c['hold_ms'] / 1000:g} s)" if c.get("hold_ms") else ""))
    print()
    print(f"{'ring':<24} {'pid':>7} {'offered':>10} {'pushed':>10} {'ring_full':>9} "
          f"{'consumed':>10} {'no_sess':>7} {'corrupt':>7} {'fill':>6}")
    for r in st["rings"]:
        fill = 100.0 * r["fill_bytes"] / r["data_size"]
        print(f"{r['name']:<24} {r['producer_pid']:>7} {r['offered']:>10} {r['pushed_packets']:>10} "
              f"{r['dropped_ring_full']:>9} {r['consumed_packets']:>10} {r['dropped_no_session']:>7} "
              f"{r['corrupt']:>7} {fill:>5.1f}%")
    for r in st["rings"]:
        if r.get("last_corrupt"):
            print(f"{r['name']}: last corruption: {r['last_corrupt']}")
    for path_, err in st.get("ring_errors", {}).items():
        print(f"refused {path_}: {err}")
    if st.get("forwarders"):
        print()
        print(f"{'forwarder':>9} {'config':<8} {'generation':>10} {'in sync':<7} registered")
    for f in st.get("forwarders", []):
        in_sync = (f.get("instance"), f.get("generation")) == (st.get("instance"), st["generation"])
        print(f"{f.get('pid')!s:>9} {f.get('config_from', '?')!s:<8} {str(f.get('generation')):>10} "
              f"{'yes' if in_sync else 'NO':<7} {'yes' if f.get('registered') else 'NO'}")
        if f.get("register_error"):
            print(f"forwarder {f['pid']}: {f['register_error']}")
        waiting = f.get("waiting")  # pairs whose interface does not exist yet (a file: checked)
        for w in waiting if isinstance(waiting, list) else []:
            if isinstance(w, dict) and isinstance(w.get("missing"), list):
                print(f"forwarder {f['pid']}: pair {str(w.get('pair'))!r} waits for "
                      f"{', '.join(map(str, w['missing']))}" + (f" ({w['error']!s})" if w.get("error") else ""))
    _print_forwarders(st.get("forwarders", []))
    return 0


def _print_forwarders(forwarders: list[dict]) -> None:
    """The fast path's bindings: what it forwarded, what it dropped (its own reasons, then the
    kernel's counts on its sockets: xdp_rx_* at the ingress, xdp_tx_* at the egress)."""
    if not forwarders:
        return
    print()
    print(f"{'forwarder binding':<24} {'rx':>10} {'tx':>10} {'tx_full':>7} {'tx_down':>7} "
          f"{'filtered':>9} {'sampled':>9} {'pushed':>9} {'ring_full':>9} {'no_ring':>7}  kernel drops")
    for f in forwarders:
        for b in f.get("bindings", []):
            name = f"{b['ingress']}->{b['egress']} q{b['queue']}"
            kernel = " ".join(f"{k}={b[k]}" for k in ("xdp_rx_dropped", "xdp_rx_ring_full",
                                                       "xdp_rx_invalid_descs", "xdp_tx_invalid_descs")
                              if b.get(k))
            print(f"{name:<24} {b.get('rx_packets', 0):>10} {b.get('tx_packets', 0):>10} "
                  f"{b.get('dropped_tx_full', 0):>7} {b.get('dropped_tx_down', 0):>7} "
                  f"{b.get('mirror_filtered', 0):>9} {b.get('mirror_sampled', 0):>9} {b.get('mirror_pushed', 0):>9} "
                  f"{b.get('mirror_dropped_ring_full', 0):>9} {b.get('mirror_dropped_no_ring', 0):>7}  "
                  f"{kernel or 'none'}")
            for r in b.get("sessions", []) if len(b.get("sessions", [])) > 1 or any(
                    r.get("vlan") for r in b.get("sessions", [])) else []:
                # per (binding, session) when VLAN inputs split the binding
                who = f"  {r.get('input')} ({r.get('session')})"
                print(f"{who:<24} {r.get('seen', 0):>10} {'':>10} {'':>7} {'':>7} {r.get('filtered', 0):>9} "
                      f"{r.get('sampled', 0):>9} "
                      f"{r.get('pushed', 0):>9} {r.get('dropped_ring_full', 0):>9} {r.get('dropped_no_ring', 0):>7}")


def build_parser() -> argparse.ArgumentParser:
    from mirrord import __version__

    ap = argparse.ArgumentParser(prog="mirrord", description="port-mirroring sidecar")
    ap.add_argument("--version", action="version", version=f"mirrord {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND",
                            help="`mirrord COMMAND --help` for its options")

    run = sub.add_parser("run", help="run the daemon in the foreground")
    run.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG,
                     help=f"the configuration file (default {DEFAULT_CONFIG})")
    run.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    run.set_defaults(func=_cmd_run)

    demo = sub.add_parser("demo", help="the built-in lab: namespaces, forwarder, daemon, traffic")
    demo.add_argument("--count", type=int, default=1000, help="frames to send (bounded)")
    demo.add_argument("--size", type=int, default=128, help="frame size in bytes")
    demo.set_defaults(func=_cmd_demo)

    fwd = sub.add_parser("forward", help="run the AF_XDP forwarder (the reference fast path)")
    fwd.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG,
                     help="the daemon's config: read once, for its control socket and runtime "
                          "directory (and the sampling until the daemon answers; then the "
                          "daemon's accepted config rules, and SIGHUP asks the daemon at once)")
    fwd.add_argument("--pair", action="append", required=True, metavar="A:B",
                     help="forward A<->B (bump in the wire); repeatable")
    fwd.add_argument("--queue", type=int, default=0, help="the one queue to serve (default 0)")
    fwd.add_argument("--queues", type=int, default=0, metavar="N",
                     help="serve queues 0..N-1, one worker and one ring per (pair, queue)")
    fwd.add_argument("--native", action="store_true",
                     help="driver-mode XDP; the kernel uses zero-copy where the driver supports it "
                          "(default: generic/skb mode, copy)")
    fwd.add_argument("--ring-size", type=int, default=0, help="ring data size in bytes (power of two)")
    fwd.add_argument("--ready-file", type=Path, metavar="PATH",
                     help="create PATH once forwarding (removed at exit), for scripts to wait on; "
                          "also: the line 'forwarding' on stdout, READY=1 when $NOTIFY_SOCKET is set")
    fwd.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    fwd.set_defaults(func=_cmd_forward)

    status = sub.add_parser("status", help="sessions, outputs, rings and counters")
    status.add_argument("-c", "--config", type=Path, help="take the control socket from this config")
    status.add_argument("--socket", type=Path, help="the control socket path")
    status.add_argument("--json", action="store_true", help="the whole status as JSON")
    status.set_defaults(func=_cmd_status)

    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file", type=Path, help="the configuration file to check")
    check.add_argument("--strict", action="store_true",
                       help="also demand that every input and every interface output exists now "
                            "(without it, a missing one is waited for)")
    check.set_defaults(func=_cmd_check_config)

    imp = sub.add_parser("import", help="translate another system's mirroring configuration")
    isub = imp.add_subparsers(dest="format", required=True, metavar="FORMAT",
                              help="the format of FILE (junos)")
    jun = isub.add_parser("junos", help="forwarding-options port-mirroring, hierarchical or set form",
                          description="Read a Junos configuration (hierarchical, `set` lines, or both) and "
                                      "write its forwarding-options port-mirroring as mirrord sessions.")
    jun.add_argument("file", type=Path, metavar="FILE", help="the Junos configuration")
    jun.add_argument("--map", action="append", metavar="JUNOS=LINUX",
                     help="a Junos interface (ge-0/0/1, or a unit ge-0/0/1.100) and its Linux name; "
                          "an output may be TYPE:NAME (tap:mirror0); repeatable, wins over --map-file")
    jun.add_argument("--map-file", type=Path, metavar="F",
                     help="one 'JUNOS LINUX' or 'JUNOS=LINUX' per line, # comments")
    jun.add_argument("-o", "--output", type=Path, metavar="OUT.toml", help="write here (default: stdout)")
    jun.add_argument("--skip-unknown", action="store_true",
                     help="import what is understood; list (and write as comments) what is not")
    jun.set_defaults(func=_cmd_import_junos)

    ring = sub.add_parser("ring-stat", help="show the counters of ring files (read-only)")
    ring.add_argument("paths", nargs="+", type=Path, metavar="RING",
                      help="ring files (e.g. /run/mirrord/*.ring)")
    ring.add_argument("--json", action="store_true", help="machine-readable output")
    ring.set_defaults(func=_cmd_ring_stat)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
