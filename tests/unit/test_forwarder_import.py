"""`import mirrord.forwarder` (and its follower) loads no libxdp: only the binding does."""
import subprocess
import sys

NATIVE = ("mirrord._native", "mirrord._xdp")  # the compiled module that links libxdp/libbpf


def _loaded_after(stmt: str) -> list[str]:
    code = f"import sys; {stmt}; print(' '.join(m for m in {NATIVE!r} if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_package_and_follower_load_no_libxdp():
    assert _loaded_after("import mirrord.forwarder, mirrord.forwarder.follow") == []


def test_binding_loads_it():
    assert _loaded_after("import mirrord.forwarder.binding") != []
