"""A TAP output put into a bridge and taken out again stays the daemon's open output.

Taking a port out of a bridge makes the kernel send RTM_DELLINK with ifi_family AF_BRIDGE
and the port's name and index (the bridge's notice that the port left, not a deletion of
the device).  The daemon read it as its device deleted, closed the TAP (which a TAP's last
close removes) and re-created it seconds later: copies counted no_output meanwhile, and a
tcpdump or tc qdisc on mirror0 lost its device."""
import json
import subprocess
import time

import pytest

pytestmark = pytest.mark.root

SESSION = '[[session]]\nname = "s"\ninput = ["a0"]\noutput = { type = "tap", name = "mirror0" }\n'


def _ifindex(ns, dev):
    out = subprocess.run(["ip", "-j", "-n", ns, "link", "show", dev], capture_output=True, text=True)
    return json.loads(out.stdout)[0]["ifindex"] if out.returncode == 0 else None


def test_a_tap_output_leaving_a_bridge_is_not_closed(daemon, netns):
    d = daemon(SESSION)
    st = d.wait_for(lambda st: st["sessions"][0]["output"]["open"], what="mirror0 open")
    first = _ifindex(netns, "mirror0")
    assert first is not None
    subprocess.run(["ip", "-n", netns, "link", "add", "mbr0", "type", "bridge"], check=True)
    for _ in range(3):  # in and out, a few times
        subprocess.run(["ip", "-n", netns, "link", "set", "mirror0", "master", "mbr0"], check=True)
        subprocess.run(["ip", "-n", netns, "link", "set", "mirror0", "nomaster"], check=True)
    subprocess.run(["ip", "-n", netns, "link", "del", "mbr0"], check=True)
    deadline = time.monotonic() + 2.0  # the daemon has read the events well before (bounded)
    while time.monotonic() < deadline:
        assert _ifindex(netns, "mirror0") == first, "the daemon closed (and removed) its TAP"
        time.sleep(0.1)
    st = d.status()
    assert st["sessions"][0]["output"]["open"]
    assert "output_gone" not in d.log.read_text()
