"""A session's ``filter``: compiled by libpcap at load, refused with libpcap's own text."""
import struct
import subprocess
import sys

import pytest

from mirrord.config import ConfigError, loads
from mirrord.filter import compile_filter, matches


def sess(extra=""):
    return f'[[session]]\nname = "dns"\ninput = ["eth1"]\noutput = {{ type = "tap", name = "m0" }}\n{extra}\n'


def _err(text):
    with pytest.raises(ConfigError) as e:
        loads(text)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_filter_compiles_at_load():
    s = loads(sess('filter = "udp port 53"')).sessions[0]
    assert s.filter == "udp port 53"
    assert s.filter_program == compile_filter("udp port 53") and len(s.filter_program) % 8 == 0
    s = loads(sess()).sessions[0]
    assert (s.filter, s.filter_program) == ("", b"")


@pytest.mark.parametrize("extra,expected", [
    ('filter = "port 5x"', 'session "dns": filter "port 5x": unknown port \'5x\''),
    ('filter = "udp and"', 'session "dns": filter "udp and": can\'t parse filter expression: syntax error'),
    ('filter = 53', 'session "dns": key "filter": must be a string in tcpdump\'s syntax, got 53'),
    ('filter = "' + "udp or " * 600 + 'tcp"', "bytes long, at most 4096"),
    ('filter = "udp\\u0000port 53"', "contains a NUL byte"),
])
def test_bad_filter_is_one_line_with_libpcaps_text(extra, expected):
    assert expected in _err(sess(extra))


def _udp(dport):
    eth = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    return eth + ip + struct.pack("!HHHH", 1234, dport, 8, 0)


def test_program_is_libpcaps_and_selects():
    p = compile_filter("udp port 53")
    assert matches(p, _udp(53)) and not matches(p, _udp(54))
    vlan = _udp(53)[:12] + b"\x81\x00\x00\x64" + _udp(53)[12:]
    assert not matches(p, vlan) and matches(compile_filter("vlan and udp port 53"), vlan)


def test_check_config_prints_each_filter(tmp_path):
    f = tmp_path / "m.toml"
    f.write_text(sess('filter = "udp port 53"'))
    r = subprocess.run([sys.executable, "-m", "mirrord", "check-config", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "    filter: 'udp port 53' (" in r.stdout
    f.write_text(sess('filter = "port 5x"'))
    r = subprocess.run([sys.executable, "-m", "mirrord", "check-config", str(f)], capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr == f"mirrord: {f}: session \"dns\": filter \"port 5x\": unknown port '5x'\n"
