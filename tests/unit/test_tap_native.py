"""The C tests of the tap, built and run under the sanitizers (ASan/UBSan, and TSan for the
stress half of each):

- native/tests/test_tap.c: sampling exact to the frame, gather and truncation byte for byte,
  every drop reason, a truncated ring file, rules swapped from another thread under load;
- native/tests/test_tap_vlan.c: the VLAN table: VID dispatch (802.1Q and the outer S-tag of
  QinQ, untagged and unmatched VIDs to the parent's rule), each rule's own rate and counters,
  a filter that rejects a frame without falling back to the parent, the table's bounds, and
  tables swapped under load with counters read meanwhile;
- native/tests/test_tap_listened.c: when_listened: nobody listed skips every sampled frame
  (the ring stays empty), the session listed copies, a rule without the flag ignores the set,
  more sessions than fit and a set caught mid-write both read as listened, and a consumer
  thread flipping the set under load keeps sampled == pushed + skipped + drops."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# the tap on the ring and its guard, as libmirrord and mirrord._xdp build them
LIB = [ROOT / "native/src" / f for f in ("tap.c", "ring.c", "guard.c")]
TESTS = ("test_tap", "test_tap_vlan", "test_tap_listened")
CFLAGS = ["-std=gnu11", "-g", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter",
          f"-I{ROOT / 'native/include'}"]

BUILDS = {
    "asan-ubsan": (["-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"], ["all", "20000"]),
    "tsan": (["-O1", "-fsanitize=thread", "-Wno-tsan"], ["stress", "5000"]),
}


@pytest.mark.parametrize("build", sorted(BUILDS))
@pytest.mark.parametrize("test", TESTS)
def test_c_tap(test, build, tmp_path):
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    flags, args = BUILDS[build]
    exe = tmp_path / f"{test}-{build}"
    sources = [*LIB, ROOT / "native/tests" / f"{test}.c"]
    r = subprocess.run([cc, *CFLAGS, *flags, *map(str, sources), "-lpcap", "-lpthread", "-o", str(exe)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{test} {build}: rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    assert r.stdout.rstrip().endswith("ok"), r.stdout
    assert "stress: bursts>=" in r.stdout
