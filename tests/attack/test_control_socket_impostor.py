"""An explicit `control_socket` outside `runtime_dir` is never checked for trust.

Issue 13 (4) made `mirrord run` and `mirrord forward` refuse an untrusted *runtime_dir*,
because "whoever can write it can replace control.sock and receive the producer's
register with its fds".  But docs/configuration.md lets `control_socket` be set "as
given, wherever runtime_dir is", e.g. `/tmp/mirrord.sock` so that operators can run
`mirrord status`.  Its directory is not checked by either side, and the forwarder does
not check who listens there (no SO_PEERCRED check).  Any local user who binds that path
first (before the daemon starts, or while it restarts) is handed the forwarder's ring
descriptors, open O_RDWR, and every mirrored frame with them; the fake daemon's `config`
also sets the forwarder's sampling (here: mirror everything the real config does not).
"""
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from frames import eth, ipv4_udp
from test_forward import Lab  # noqa: F401  (the three-namespace AF_XDP lab)

pytestmark = pytest.mark.root
WT = str(Path(__file__).resolve().parents[2])


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path).up()
    yield lab
    lab.down()


def test_forwarder_hands_its_rings_to_a_control_socket_an_unprivileged_user_bound(lab, tmp_path):
    sock = Path(f"/tmp/mra-{uuid.uuid4().hex[:10]}.sock")  # world-writable (sticky) /tmp
    cfg = tmp_path / "mirrord.toml"
    # the file mirrors nothing on a0 (its only session reads another interface)
    cfg.write_text(f'[daemon]\nruntime_dir = "{tmp_path / "run"}"\ncontrol_socket = "{sock}"\n'
                   '[[session]]\nname = "span"\ninput = ["zz0"]\noutput = { type = "tap", name = "m0" }\n')
    marker = "TOPSECRET-" + uuid.uuid4().hex[:8]
    imp = subprocess.Popen(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
                            sys.executable, str(Path(__file__).with_name("impostor.py")), str(sock), "a0",
                            marker, "8", WT], stdout=subprocess.PIPE, text=True)
    lab.procs.append(imp)
    try:
        assert imp.stdout.readline().strip() == "listening"
        assert os.stat(sock).st_uid == 65534
        fwd = lab.start_forwarder(cfg)
        frames = [eth(0x0800, ipv4_udp(f"{marker}{i:04d}".encode())) for i in range(40)]
        got = lab.transfer(frames, lab.src, "s0", lab.sink, "k0")
        assert len(got) == 40  # forwarding itself is fine
        out = json.loads(imp.stdout.readline())
        imp.wait(10)
        lab.stop_forwarder(fwd)
    finally:
        if sock.exists():
            sock.unlink()
    print(out)
    # what a secure forwarder must do: refuse to hand anything to a socket nobody owns
    # in a directory anyone can write
    assert out["registered"] == [], (
        f"the forwarder (root) registered its rings with a fake daemon run by uid {out['uid']}: "
        f"{out['registered']}; ring fd access mode {out['ring_fd_accmode']} (2 = O_RDWR); "
        f"{out['marker_hits']} of 40 mirrored frames read from it by that user")
