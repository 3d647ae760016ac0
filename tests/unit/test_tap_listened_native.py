"""The C tests of when_listened (native/tests/test_tap_listened.c), built and run under the
sanitizers: nobody listed skips every sampled frame (the ring stays empty), the session
listed copies, a rule without the flag ignores the set, more sessions than fit and a set
caught mid-write both read as listened, and a consumer thread flipping the set while the
packet thread offers keeps sampled == pushed + skipped + drops at every burst (TSan)."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [*(ROOT / "native/src" / f for f in ("tap.c", "ring.c", "guard.c")), ROOT / "native/tests/test_tap_listened.c"]
CFLAGS = ["-std=gnu11", "-g", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter",
          f"-I{ROOT / 'native/include'}"]

BUILDS = {
    "asan-ubsan": (["-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"], ["all", "20000"]),
    "tsan": (["-O1", "-fsanitize=thread", "-Wno-tsan"], ["stress", "5000"]),
}


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_c_tap_listened(build, tmp_path):
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    flags, args = BUILDS[build]
    exe = tmp_path / f"test_tap_listened-{build}"
    r = subprocess.run([cc, *CFLAGS, *flags, *map(str, SOURCES), "-lpcap", "-lpthread", "-o", str(exe)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{build}: rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    assert r.stdout.rstrip().endswith("ok"), r.stdout
    assert "stress: bursts>=" in r.stdout
