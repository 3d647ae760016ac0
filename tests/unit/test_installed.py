"""The guard of the installed-package run (`make test` builds a wheel, installs it into a
fresh venv and runs the daemon- and forwarder-level tests with that venv's `pytest`).

With ``MIRRORD_EXPECT_INSTALLED=1`` the run is meant to test the installed package: this
fails if ``mirrord`` (in this process, or in the ``python -m mirrord`` subprocesses the
tests start) came from the source tree instead of the venv's site-packages, or if the
install lacks any module the tree has (as `packages = ["mirrord"]` once left out
mirrord.sinks).
"""
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXPECT = os.environ.get("MIRRORD_EXPECT_INSTALLED") == "1"
pytestmark = pytest.mark.skipif(not EXPECT, reason="MIRRORD_EXPECT_INSTALLED=1 is set by `make test` "
                                                   "for the run against the installed wheel")

PROBE = ("import mirrord, mirrord._ring, mirrord._xdp, mirrord.sinks.tap, mirrord.cli; "
         "print(mirrord.__file__); print(mirrord._ring.__file__); print(mirrord._xdp.__file__); "
         "print(mirrord.sinks.tap.__file__)")


def site_dirs() -> set[Path]:
    return {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}


def check(files: list[str]) -> None:
    sites = site_dirs()
    for f in files:
        p = Path(f).resolve()
        assert ROOT / "mirrord" not in p.parents, f"{p} was imported from the source tree, not the wheel"
        assert any(s in p.parents for s in sites), f"{p} is not under the venv's site-packages {sites}"


def test_this_process_imports_the_installed_mirrord():
    assert sys.prefix != sys.base_prefix, "not running in a venv"
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         cwd=os.getcwd()).stdout.split()
    import mirrord

    check([mirrord.__file__, *out])


def test_python_dash_m_mirrord_in_the_tests_cwd_runs_the_installed_one():
    # the tests start `sys.executable -m mirrord ...` from the current directory, which
    # `-m` puts first on sys.path: it must not be the source tree
    assert Path.cwd().resolve() != ROOT
    r = subprocess.run([sys.executable, "-m", "mirrord", "--version"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = subprocess.run([sys.executable, "-c", "import runpy, mirrord; print(mirrord.__file__)"],
                         capture_output=True, text=True, check=True).stdout.split()
    check(out)


def test_the_install_has_every_module_of_the_tree():
    import mirrord

    installed = Path(mirrord.__file__).parent
    tree = ROOT / "mirrord"
    want = {p.relative_to(tree) for p in tree.rglob("*.py")}
    have = {p.relative_to(installed) for p in installed.rglob("*.py")}
    assert want - have == set(), f"missing from the wheel: {sorted(map(str, want - have))}"
    for module in ("_ring", "_xdp"):
        assert list(installed.glob(f"{module}*.so")), f"the compiled mirrord.{module} is not in the wheel"
