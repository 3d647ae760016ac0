"""`mirrord import junos` on hostile or odd files and output paths, as the user runs it:
every problem is one line on stderr with exit status 1, never a traceback, and no resource
grows beyond what the file's size explains; -o never replaces what is not a regular file."""
import os
import stat
import subprocess
import sys
import tomllib

import pytest

MAP = ["--map", "ge-0/0/1=eth1", "--map", "ge-0/0/2=eth2"]
GOOD = ("forwarding-options { port-mirroring { input { ingress { interface ge-0/0/1; } }\n"
        "    output { interface ge-0/0/2; } } }\n")


def cli(*args, limit_mb=None):
    pre = None
    if limit_mb:
        import resource

        def pre():
            resource.setrlimit(resource.RLIMIT_AS, (limit_mb << 20, limit_mb << 20))
    return subprocess.run([sys.executable, "-m", "mirrord", *args], capture_output=True, text=True, timeout=120,
                          preexec_fn=pre)


def _one_error_line(r):
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "Error:" not in r.stderr.split("mirrord:")[0], r.stderr
    assert all(line.startswith("mirrord: ") for line in r.stderr.splitlines()), r.stderr


def test_deep_nesting_is_one_error_line_not_a_recursion_traceback(tmp_path):
    src = tmp_path / "deep.conf"
    src.write_text("a { " * 5000 + "}" * 5000 + "\n")
    r = cli("import", "junos", str(src), *MAP)
    _one_error_line(r)
    assert f"mirrord: {src}:1: " in r.stderr and "deep" in r.stderr


def test_bracket_lists_do_not_multiply_into_exponential_statements(tmp_path):
    # 28 two-element lists in one statement: 2**28 paths if they are multiplied out
    src = tmp_path / "lists.conf"
    src.write_text("forwarding-options { port-mirroring { input { ingress { interface " + "[ a b ] " * 28
                   + "; } } } }\n")
    r = cli("import", "junos", str(src), *MAP, limit_mb=1024)
    _one_error_line(r)
    assert f"mirrord: {src}:1: " in r.stderr and "[ ]" in r.stderr


def test_a_quoted_name_with_a_newline_stays_on_one_error_line(tmp_path):
    src = tmp_path / "q.conf"
    src.write_text('set forwarding-options port-mirroring input ingress interface "ge-0/0/9\n.5"\n'
                   "set forwarding-options port-mirroring output interface ge-0/0/2\n")
    r = cli("import", "junos", str(src), *MAP)
    _one_error_line(r)
    assert "no Linux name for 1 Junos interface" in r.stderr


def test_output_through_a_symlink_writes_the_file_it_points_to(tmp_path):
    src, real, link = tmp_path / "g.conf", tmp_path / "real.toml", tmp_path / "link.toml"
    src.write_text(GOOD)
    real.write_text("# old\n")
    link.symlink_to(real)
    r = cli("import", "junos", str(src), *MAP, "-o", str(link))
    assert r.returncode == 0, r.stderr
    assert link.is_symlink(), "the symlink was replaced by a file"
    assert tomllib.loads(real.read_text())["session"][0]["input"] == ["eth1"]


def test_output_to_a_fifo_writes_into_it_and_leaves_it_a_fifo(tmp_path):
    # -o /dev/stdout or /dev/null as root must not replace the device node with a file
    src, fifo = tmp_path / "g.conf", tmp_path / "pipe"
    src.write_text(GOOD)
    os.mkfifo(fifo)
    rd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        r = cli("import", "junos", str(src), *MAP, "-o", str(fifo))
        assert r.returncode == 0, r.stderr
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO was replaced by a regular file"
        got = os.read(rd, 1 << 16).decode()
    finally:
        os.close(rd)
    assert tomllib.loads(got)["session"][0]["output"] == {"type": "interface", "name": "eth2"}


def test_output_to_a_directory_is_one_line(tmp_path):
    src = tmp_path / "g.conf"
    src.write_text(GOOD)
    (tmp_path / "d").mkdir()
    r = cli("import", "junos", str(src), *MAP, "-o", str(tmp_path / "d"))
    _one_error_line(r)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
