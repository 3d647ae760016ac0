"""The shipped systemd units: hardened (systemd's own exposure score), valid, and
consistent with what the daemon does (Type=notify with a watchdog, SIGHUP reload)."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mirrord.config import load, loads

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"


def _analyze():
    exe = shutil.which("systemd-analyze")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is missing under CI=true (.ci/bootstrap installs systemd)")
        pytest.skip("systemd-analyze is not installed")
    return exe


def exposure(unit: Path) -> float:
    out = subprocess.run([_analyze(), "security", "--offline=yes", str(unit)], capture_output=True,
                         text=True, check=True).stdout
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
    assert m, out
    return float(m.group(1))


def test_daemon_unit_exposure_is_at_most_2_5():
    score = exposure(UNITS / "mirrord.service")
    assert score <= 2.5, f"mirrord.service exposure {score} > 2.5"


@pytest.mark.parametrize("unit", ["mirrord.service", "mirrord-forward.service"])
def test_units_verify(unit, tmp_path):
    # verify insists that ExecStart's binary exists; point it at this Python
    text = (UNITS / unit).read_text().replace("/opt/mirrord/bin/mirrord", f"{sys.executable} -m mirrord")
    (tmp_path / unit).write_text(text)
    r = subprocess.run([_analyze(), "verify", "--man=no", str(tmp_path / unit)], capture_output=True,
                       text=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


def _directives(unit: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (UNITS / unit).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_daemon_unit_matches_what_the_daemon_does():
    d = _directives("mirrord.service")
    assert d["Type"] == ["notify"] and d["WatchdogSec"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["AmbientCapabilities"] == d["CapabilityBoundingSet"]
    assert d["ProtectSystem"] == ["strict"]
    assert d["DevicePolicy"] == ["closed"] and d["DeviceAllow"] == ["/dev/net/tun rw"]
    assert d["User"] == ["mirrord"] and "root" not in d["User"]
    families = set(d["RestrictAddressFamilies"][0].split())
    assert families == {"AF_UNIX", "AF_NETLINK", "AF_PACKET", "AF_INET", "AF_INET6"}
    # the sample config the unit points at is valid and uses the unit's runtime directory
    cfg = load(UNITS / "mirrord.toml")
    assert str(cfg.daemon.runtime_dir) == "/run/mirrord" and len(cfg.sessions) == 2
    assert "-c /etc/mirrord/mirrord.toml" in d["ExecStart"][0]
    assert int(d["LimitNOFILE"][0]) >= 65536  # idle connections must not starve outputs and rings


def test_units_run_what_the_docs_install():
    # docs/operations.md installs into a venv at /opt/mirrord
    for unit in ("mirrord.service", "mirrord-forward.service"):
        assert _directives(unit)["ExecStart"][0].startswith("/opt/mirrord/bin/mirrord "), unit
    assert "/opt/mirrord/bin/mirrord" in (ROOT / "docs" / "operations.md").read_text()


def test_one_ownership_model_for_the_runtime_directory():
    """tmpfiles owns /run/mirrord (mirrord:mirrord 0770); no unit declares RuntimeDirectory=
    (which re-owns it and its contents at each start); both may write it; the daemon's files
    and the root forwarder's rings are the mirrord group's (UMask=0007)."""
    tmpfiles = [line.split() for line in (UNITS / "mirrord.tmpfiles").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert tmpfiles == [["d", "/run/mirrord", "0770", "mirrord", "mirrord", "-"]]
    daemon, fwd = _directives("mirrord.service"), _directives("mirrord-forward.service")
    for d in (daemon, fwd):
        assert not any(k.startswith("RuntimeDirectory") for k in d)
        assert d["ReadWritePaths"] == ["/run/mirrord"] and d["UMask"] == ["0007"] and d["Group"] == ["mirrord"]
    assert daemon["User"] == ["mirrord"] and "User" not in fwd  # the forwarder: root, in the group
    # the daemon's control.sock is group-accessible by default, so the forwarder can connect
    assert loads("").daemon.control_mode == 0o660
    # and the sample config puts everything into that directory
    cfg = load(UNITS / "mirrord.toml")
    assert cfg.daemon.control_socket.parent == cfg.daemon.runtime_dir == Path("/run/mirrord")


def test_forwarder_unit_has_no_cap_sys_admin():
    d = _directives("mirrord-forward.service")
    caps = set(d["CapabilityBoundingSet"][0].split())
    assert caps == set(d["AmbientCapabilities"][0].split())
    assert caps == {"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_BPF", "CAP_IPC_LOCK"}
