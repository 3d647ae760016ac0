"""Thousands of sessions whose `interface` outputs are missing: the daemon never opens a
socket for them (they wait for their device's RTM_NEWLINK), so the event loop stays free:
status answers within the client's timeout every time while another session's copies at a
moderate rate are all delivered, none dropped as ring_full."""
import os
import subprocess
import threading
import time

import pytest
from fixtures.sessions import VETH, sid

from mirrord.ring import Producer

pytestmark = pytest.mark.root

MISSING = 2000
FRAME = bytes.fromhex("020000000002020000000001") + b"\x88\xb5" + b"s" * 50


def _missing_sessions(n):
    return "".join(f'[[session]]\nname = "m{i}"\ninput = ["in{i}"]\noutput = {{ type = "interface", name = "o{i}" }}\n'
                   for i in range(n))


def test_thousands_of_missing_outputs_cause_no_churn_and_status_answers(daemon, make_veth):
    make_veth()  # mout0: session "ids" delivers while the others wait for their devices
    d = daemon(VETH + _missing_sessions(MISSING))
    ids = sid(VETH, "ids")
    with Producer(d.run_dir / "a.ring", data_size=1 << 18) as p:
        d.wait_for(lambda st: len(st["rings"]) == 1, what="ring attached", timeout=60)
        stop, counts = threading.Event(), {"offered": 0, "pushed": 0}

        def pusher():  # ~1000 frames/s, bounded in time and count
            deadline = time.monotonic() + 30
            while not stop.is_set() and counts["offered"] < 30_000 and time.monotonic() < deadline:
                for _ in range(10):
                    counts["offered"] += 1
                    counts["pushed"] += p.push(FRAME, session_id=ids)
                time.sleep(0.01)

        t = threading.Thread(target=pusher)
        t.start()
        answered = 0
        try:
            # past the first retry of every missing output (5 s, jittered down to 2.5 s)
            until = time.monotonic() + 7
            while time.monotonic() < until and answered < 200:
                st = d.status()  # ControlClient's 5 s timeout: a stalled loop fails here
                answered += 1
                time.sleep(0.05)
        finally:
            stop.set()
            t.join()
        st = d.wait_for(lambda st: st["rings"][0]["fill_bytes"] == 0, what="ring drained")
    assert answered >= 5
    ring = st["rings"][0]
    assert counts["pushed"] == counts["offered"] > 1000
    assert ring["dropped_ring_full"] == 0 and ring["pushed_packets"] == counts["pushed"]
    by_name = {s["name"]: s for s in st["sessions"]}
    assert by_name["ids"]["counters"]["mirrored_packets"] == counts["pushed"]
    # not one socket was made for a missing output, not even by the retries
    missing = [s for n, s in by_name.items() if n != "ids"]
    assert len(missing) == MISSING
    assert [s["name"] for s in missing if s["output"]["opens"] or s["output"]["open"]] == []
    assert {s["output"]["error"] for s in missing[:3]} == {f"interface o{i}: no such interface o{i}" for i in range(3)}
    # a device that appears is opened once, woken by its RTM_NEWLINK
    make_veth("o7", "p7")
    st = d.wait_for(lambda st: st["sessions"][8]["output"]["open"], what="o7 opened", timeout=20)
    assert st["sessions"][8]["name"] == "m7" and st["sessions"][8]["output"]["opens"] == 1
    assert "event=output_back session=m7 output=o7" in d.log.read_text()
    # and at rest the daemon is one thread again
    deadline = time.monotonic() + 5
    while len(os.listdir(f"/proc/{d.proc.pid}/task")) != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.listdir(f"/proc/{d.proc.pid}/task") == [str(d.proc.pid)]
    subprocess.run(["ip", "link", "del", "o7"], check=True)
