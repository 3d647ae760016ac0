"""`cargo test --offline` in native/rust/mirrord-tap: the binding's own tests (a memfd tap,
sampling counts, a full ring, run length over fragment chains, a control thread swapping
rules while the packet thread offers), linked against libmirrord.a built from the tree."""
import re

from fixtures.cargo import run


def test_cargo_test():
    r = run("test")
    out = r.stdout + r.stderr
    results = re.findall(r"test result: ok\. (\d+) passed; (\d+) failed", out)
    assert results, out
    assert sum(int(p) for p, _ in results) >= 8 and all(f == "0" for _, f in results), out
    assert "rate_7_over_1000_frames_samples_143_and_pushes_them_all ... ok" in out
