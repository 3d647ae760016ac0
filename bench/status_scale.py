"""How many sessions and rings the daemon handles with `status` answering fast.

For each (sessions, rings) cell: start the real daemon in a fresh network namespace with
that many sessions whose `interface` outputs are missing, attach that many rings (each
with one copy for a session, so every ring's route counters are summed), then time
`status` over the control socket.  Prints one line per cell: startup (process start to
`event=started`), status p50 and max, timeouts, stop time.  Needs root; cleans up.

    sudo .venv/bin/python bench/status_scale.py                  # 100/1000/10000 x 1/64/256
    sudo .venv/bin/python bench/status_scale.py --sessions 2000 --rings 64 --reps 50
"""
import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixtures.daemon import DaemonProc  # noqa: E402

from mirrord.config import loads  # noqa: E402
from mirrord.protocol import ControlClient  # noqa: E402
from mirrord.ring import Producer  # noqa: E402


def sessions(n: int) -> str:
    return "".join(f'[[session]]\nname = "s{i}"\ninput = ["in{i}"]\n'
                   f'output = {{ type = "interface", name = "o{i}" }}\n' for i in range(n))


def cell(n: int, r: int, reps: int) -> str:
    ns = f"mrb-{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="mrb-"))
    subprocess.run(["ip", "netns", "add", ns], check=True)
    d = None
    prods = []
    try:
        text = sessions(n)
        s0 = loads(text).sessions[0].id
        d = DaemonProc(tmp, text, netns=ns, http="off")
        t0 = time.monotonic()
        d.start(timeout=600)
        while "event=started" not in d.log.read_text():
            time.sleep(0.01)
        startup = time.monotonic() - t0
        for i in range(r):
            prods.append(Producer(d.run_dir / f"r{i}.ring", data_size=1 << 16))
            prods[-1].push(b"\x02" * 60, session_id=s0)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if len(d.status()["rings"]) >= r:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        lat, fails = [], 0
        for _ in range(reps):
            t = time.monotonic()
            try:
                with ControlClient(d.sock, timeout=5.0) as c:
                    c.request({"op": "status"})
                lat.append((time.monotonic() - t) * 1000)
            except OSError:
                fails += 1
            time.sleep(0.1)
        t = time.monotonic()
        d.stop()
        stop = time.monotonic() - t
        p50 = statistics.median(lat) if lat else float("nan")
        mx = max(lat) if lat else float("nan")
        return (f"sessions={n:<6} rings={r:<4} startup_s={startup:6.2f} status_p50_ms={p50:7.1f} "
                f"status_max_ms={mx:7.1f} timeouts={fails}/{reps} stop_s={stop:5.2f}")
    finally:
        for p in prods:
            p.close()
        if d is not None:
            d.stop()
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, nargs="*", default=[100, 1000, 10000])
    ap.add_argument("--rings", type=int, nargs="*", default=[1, 64, 256])
    ap.add_argument("--reps", type=int, default=20)
    a = ap.parse_args()
    for n in a.sessions:
        for r in a.rings:
            print(cell(n, r, a.reps), flush=True)


if __name__ == "__main__":
    main()
