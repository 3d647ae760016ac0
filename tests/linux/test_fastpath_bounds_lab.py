"""Invariant 5 at the fast path: a file that check-config accepts is one `mirrord forward`
runs; a file beyond the tap's bounds is refused by both, with the same one line."""
import subprocess
import sys

import pytest
from test_forward import Lab, config

pytestmark = pytest.mark.root

BIG = " or ".join(f"ip6 protochain {i}" for i in range(110))  # 3844 BPF instructions


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path).up()
    yield lab
    lab.down()


def test_what_check_config_accepts_the_forwarder_runs(lab, tmp_path):
    # five sessions on a0 (its own and four VLAN inputs), each filter under 4096
    # instructions, together over the 16384 of one binding's table
    sessions = "".join(
        f'[[session]]\nname = "s{n}"\ninput = ["{inp}"]\nfilter = "{BIG}"\n'
        f'output = {{ type = "tap", name = "m{n}" }}\n'
        for n, inp in enumerate(["a0", "a0.10", "a0.11", "a0.12", "a0.13"]))
    cfg = config(tmp_path, sessions)
    chk = subprocess.run(["ip", "netns", "exec", lab.fwd, sys.executable, "-m", "mirrord", "check-config",
                          str(cfg)], capture_output=True, text=True, timeout=60)
    fwd = subprocess.Popen(["ip", "netns", "exec", lab.fwd, sys.executable, "-m", "mirrord", "forward",
                            "-c", str(cfg), "--pair", "a0:b0"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    lab.procs.append(fwd)
    first = fwd.stdout.readline().strip()
    if chk.returncode == 0:
        assert first == "forwarding", fwd.communicate(timeout=15)[1]
        fwd.terminate()
        fwd.communicate(timeout=15)
        return
    out, err = fwd.communicate(timeout=30)
    assert fwd.returncode == 1 and first == ""
    line = chk.stderr.strip()
    assert "\n" not in line and 'key "filter"' in line and "16384" in line
    assert err.strip().splitlines()[-1] == line, err
