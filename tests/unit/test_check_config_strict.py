"""`check-config --strict`: every input and every `interface` output must exist now; without
--strict a missing one is fine (it is waited for).  `lo` exists in every namespace."""
import subprocess
import sys


def check(path, *extra):
    return subprocess.run([sys.executable, "-m", "mirrord", "check-config", str(path), *extra],
                          capture_output=True, text=True, timeout=60)


CFG = """
[[session]]
name = "s1"
input = ["lo", "nosuch1"]
output = { type = "tap", name = "mirror0" }

[[session]]
name = "s2"
input = ["nosuch2"]
output = { type = "interface", name = "nosuch3" }
"""


def test_strict_names_every_missing_interface_at_once(tmp_path):
    p = tmp_path / "m.toml"
    p.write_text(CFG)
    assert check(p).returncode == 0  # waited for, not fatal
    r = check(p, "--strict")
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == (f'mirrord: {p}: --strict: 3 interfaces missing now: session "s1": input nosuch1; '
                        f'session "s2": input nosuch2; session "s2": output nosuch3\n')


def test_strict_accepts_what_exists_and_tap_outputs_the_daemon_makes(tmp_path):
    p = tmp_path / "m.toml"
    p.write_text('[[session]]\nname = "s1"\ninput = ["lo"]\noutput = { type = "tap", name = "nosuchtap0" }\n')
    r = check(p, "--strict")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{p}: OK, 1 session")


def test_forward_refuses_a_pair_name_no_interface_can_have(tmp_path):
    """A missing interface is waited for; a name the kernel never gives would be waited for
    forever, so it is an error (before anything is bound: no root needed)."""
    for pair, why in (("a0:0123456789abcdefg", "'0123456789abcdefg' is 17 bytes long (1-15)"),
                      ("a/0:b0", "'a/0' contains NUL, '/', ':', '%' or whitespace")):
        r = subprocess.run([sys.executable, "-m", "mirrord", "forward", "-c", "/dev/null", "--pair", pair],
                           capture_output=True, text=True, timeout=60)
        assert (r.returncode, r.stdout) == (1, "")
        assert r.stderr == f"mirrord: --pair {pair!r}: {why}: not an interface name\n"
