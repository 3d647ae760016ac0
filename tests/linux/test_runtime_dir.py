"""The runtime directory is trusted only like sshd's StrictModes trusts ~/.ssh: whoever can
write it can replace control.sock and receive the producers' ring descriptors."""
import os
import subprocess
import sys

import pytest
from fixtures.daemon import DaemonProc

pytestmark = pytest.mark.root


def _refused(tmp_path, run_dir, why, check_config=True):
    d = DaemonProc(tmp_path, "")
    d.run_dir, d.sock = run_dir, run_dir / "control.sock"
    d.write_config("")
    with pytest.raises(RuntimeError, match="daemon exited with 1"):
        d.start()
    lines = [line for line in d.log.read_text().splitlines() if line.startswith("mirrord: ")]
    assert lines == [f"mirrord: runtime_dir {run_dir}: {why}"], d.log.read_text()
    assert not d.sock.exists()
    # check-config says the same before a restart would fail (run by root, it cannot know the
    # service's user, so it judges ownership as the directory's owner: modes and parents only)
    r = subprocess.run([sys.executable, "-m", "mirrord", "check-config", str(d.cfg)], capture_output=True, text=True)
    assert r.returncode == (1 if check_config else 0)
    assert not check_config or r.stderr.strip() == f'mirrord: {d.cfg}: [daemon]: key "runtime_dir": runtime_dir {run_dir}: {why}'
    # and `mirrord forward` creates no ring there
    r = subprocess.run([sys.executable, "-m", "mirrord", "forward", "-c", str(d.cfg), "--pair", "a:b"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and f"mirrord: runtime_dir {run_dir}: {why}" in r.stdout + r.stderr
    assert not list(run_dir.glob("*.ring"))


def test_world_writable_runtime_dir_is_refused(tmp_path):
    rd = tmp_path / "run"
    rd.mkdir()
    rd.chmod(0o777)
    _refused(tmp_path, rd, f"mode 0777 is writable by others (chmod o-w {rd})")


def test_runtime_dir_of_another_user_is_refused(tmp_path):
    rd = tmp_path / "run"
    rd.mkdir(mode=0o755)
    os.chown(rd, 65534, 65534)  # nobody
    _refused(tmp_path, rd, "owned by uid 65534 (nobody), must be owned by root or uid 0 (root) "
                           "(the user mirrord runs as)", check_config=False)


def test_group_writable_runtime_dir_of_a_foreign_group_is_refused(tmp_path):
    rd = tmp_path / "run"
    rd.mkdir()
    os.chown(rd, 0, 65534)
    rd.chmod(0o770)
    _refused(tmp_path, rd, f"mode 0770 is writable by group 65534, which is neither root's nor mirrord's "
                           f"group {os.getegid()} (chmod g-w {rd})")


def test_a_writable_parent_without_sticky_bit_is_refused(tmp_path):
    parent = tmp_path / "shared"
    parent.mkdir()
    parent.chmod(0o777)
    rd = parent / "run"
    rd.mkdir(mode=0o755)
    _refused(tmp_path, rd, f"parent {parent} has mode 0777, writable by group or others without the sticky bit")


def test_sticky_parent_and_the_systemd_layout_are_accepted(tmp_path):
    """/tmp-like parents (1777) are fine, and so is the unit's mirrord:mirrord 0770 (here the
    daemon's own group)."""
    parent = tmp_path / "sticky"
    parent.mkdir()
    parent.chmod(0o1777)
    rd = parent / "run"
    rd.mkdir()
    os.chown(rd, os.geteuid(), os.getegid())
    rd.chmod(0o770)
    d = DaemonProc(tmp_path, "")
    d.run_dir, d.sock = rd, rd / "control.sock"
    d.write_config("")
    try:
        d.start()
        st = os.stat(d.sock)
        assert oct(st.st_mode & 0o777) == "0o660" and st.st_gid == os.getegid()
        assert d.status()["generation"] == 1
    finally:
        d.stop()
    r = subprocess.run([sys.executable, "-m", "mirrord", "check-config", str(d.cfg)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
