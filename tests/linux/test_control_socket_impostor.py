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
from fixtures.frames import eth, ipv4_udp
from test_forward import Lab  # noqa: F401  (the three-namespace AF_XDP lab)

pytestmark = pytest.mark.root


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
    imp = subprocess.Popen([sys.executable, str(Path(__file__).with_name("impostor.py")), str(sock), "a0",
                            marker, "8", "65534"], stdout=subprocess.PIPE, text=True)
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


def test_forwarder_refuses_a_peer_of_another_uid_in_a_directory_it_trusts(lab, tmp_path):
    """The second lock: a control socket directory that passes the trust check (owned by
    nobody, group root, 0770: the forwarder, root, is in its group), where nobody binds the
    socket.  The forwarder checks who listens (SO_PEERCRED): not root, not the owner of
    runtime_dir, not itself: it sends nothing there, says so, and forwards on."""
    d = Path(f"/tmp/mra-{uuid.uuid4().hex[:10]}")
    d.mkdir(mode=0o770)
    os.chown(d, 65534, 0)
    d.chmod(0o770)
    sock = d / "control.sock"
    cfg = tmp_path / "mirrord.toml"
    cfg.write_text(f'[daemon]\nruntime_dir = "{tmp_path / "run"}"\ncontrol_socket = "{sock}"\n'
                   '[[session]]\nname = "span"\ninput = ["zz0"]\noutput = { type = "tap", name = "m0" }\n')
    marker = "TOPSECRET-" + uuid.uuid4().hex[:8]
    imp = subprocess.Popen([sys.executable, str(Path(__file__).with_name("impostor.py")), str(sock), "a0",
                            marker, "6", "65534"], stdout=subprocess.PIPE, text=True)
    lab.procs.append(imp)
    try:
        assert imp.stdout.readline().strip() == "listening"
        fwd = lab.start_forwarder(cfg)
        frames = [eth(0x0800, ipv4_udp(f"{marker}{i:04d}".encode())) for i in range(40)]
        got = lab.transfer(frames, lab.src, "s0", lab.sink, "k0")
        assert len(got) == 40
        out = json.loads(imp.stdout.readline())
        imp.wait(10)
        st = lab.stop_forwarder(fwd)
    finally:
        sock.unlink(missing_ok=True)
        d.rmdir()
    log = (tmp_path / "fwd.log").read_text()
    print(out, st["daemon"])
    assert out["registered"] == [] and out["marker_hits"] == 0, out
    assert "event=daemon_refused" in log and "runs as uid 65534" in log, log[-2000:]
    # and the file's tables stayed in force: nothing of a0 was sampled (the impostor's
    # config would have mirrored every frame)
    assert st["bindings"][0]["mirror_sampled"] == 0, st["bindings"][0]


def test_run_and_check_config_refuse_a_control_socket_in_a_world_writable_directory(tmp_path):
    sock = Path(f"/tmp/mra-{uuid.uuid4().hex[:10]}.sock")
    cfg = tmp_path / "mirrord.toml"
    cfg.write_text(f'[daemon]\nruntime_dir = "{tmp_path / "run"}"\ncontrol_socket = "{sock}"\n'
                   'http = "off"\n')
    why = "control_socket directory /tmp: mode 1777 is writable by others (chmod o-w /tmp)"
    r = subprocess.run([sys.executable, "-m", "mirrord", "check-config", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip() == f'mirrord: {cfg}: [daemon]: key "control_socket": {why}', r.stderr
    r = subprocess.run([sys.executable, "-m", "mirrord", "run", "-c", str(cfg)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1 and f"mirrord: {why}" in r.stderr, r.stderr
    assert not sock.exists()
