"""The C ring tests (native/tests/test_ring.c), built and run under the sanitizers."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# the ring with its guard and drain, as the mirrord._ring module builds them
SOURCES = [*(ROOT / "native/src" / f for f in ("ring.c", "guard.c", "drain.c", "encap.c")),
           ROOT / "native/tests/test_ring.c"]
CFLAGS = ["-std=gnu11", "-g", "-Wall", "-Wextra", "-Werror", f"-I{ROOT / 'native/include'}"]

BUILDS = {
    # every test: model, corruption, attach errors, and a two-thread stress
    "asan-ubsan": (["-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"],
                   ["all", "1000000"]),
    # the two-thread stress under ThreadSanitizer (it models the seq_cst wake-up pair)
    "tsan": (["-O1", "-fsanitize=thread", "-Wno-tsan"], ["stress", "300000"]),
    # optimised, as the forwarder builds it: fast enough that the ring fills and drops
    "o2": (["-O2"], ["stress", "4000000"]),
}


@pytest.fixture(scope="module")
def cc():
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler")
    return gcc


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_c_ring(build, cc, tmp_path):
    flags, args = BUILDS[build]
    exe = tmp_path / f"test_ring-{build}"
    subprocess.run([cc, *CFLAGS, *flags, *map(str, SOURCES), "-lpcap", "-lpthread", "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    r = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{build}: rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    assert r.stdout.rstrip().endswith("ok"), r.stdout
    assert "stress: offered=" in r.stdout
