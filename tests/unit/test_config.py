"""Configuration: valid files load into frozen dataclasses; every mistake is one line that
names the session (or [daemon]), the key and the reason."""
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from mirrord.config import ConfigError, loads

GOOD = """
[daemon]
runtime_dir = "/run/mirrord-test"
http = "127.0.0.1:9470"

[[session]]
name = "span1"
input = ["eth1", "eth2"]
rate = 100
run_length = 2
max_packet_length = 128
output = { type = "tap", name = "mirror0" }

[[session]]
name = "ids"
input = ["eth3"]
output = { type = "interface", name = "ana0" }
"""


def test_good_config_loads():
    cfg = loads(GOOD)
    assert cfg.daemon.runtime_dir == Path("/run/mirrord-test")
    assert cfg.daemon.control_socket == Path("/run/mirrord-test/control.sock")
    assert (cfg.daemon.http.host, cfg.daemon.http.port) == ("127.0.0.1", 9470)
    s1, s2 = cfg.sessions
    assert (s1.name, s1.input, s1.rate, s1.run_length, s1.max_packet_length) == (
        "span1", ("eth1", "eth2"), 100, 2, 128)
    assert (s1.output.type, s1.output.name) == ("tap", "mirror0")
    assert (s2.rate, s2.run_length, s2.max_packet_length) == (1, 0, 0)
    assert s1.id != s2.id and s1.id == loads(GOOD).sessions[0].id  # stable
    with pytest.raises(dataclasses.FrozenInstanceError):
        s1.rate = 5


def test_defaults_and_unix_http():
    cfg = loads('[daemon]\nhttp = "/run/m/http.sock"\n')
    assert cfg.sessions == ()
    assert cfg.daemon.http.path == "/run/m/http.sock"
    assert loads("").daemon.http.port == 9469


def _err(text):
    with pytest.raises(ConfigError) as e:
        loads(text)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def sess(extra="", out='{ type = "tap", name = "m0" }', name="s1", inp='["eth1"]'):
    return f'[[session]]\nname = "{name}"\ninput = {inp}\noutput = {out}\n{extra}\n'


@pytest.mark.parametrize("text,expected", [
    (sess("colour = 1"), 'session "s1": key "colour": unknown key'),
    (sess('rate = "10"'), 'session "s1": key "rate": must be an integer, got str \'10\''),
    (sess("rate = true"), 'session "s1": key "rate": must be an integer, got bool'),
    (sess("rate = -1"), 'session "s1": key "rate": must be between 0 and 4294967295, got -1'),
    (sess("run_length = 70000"), 'session "s1": key "run_length": must be between 0 and 65535'),
    (sess("max_packet_length = 10000"), 'session "s1": key "max_packet_length": must be between 0 and 9216'),
    (sess("max_packet_length = 10"), 'session "s1": key "max_packet_length": must be 0 (whole frame) or at least 14'),
    (sess(out='{ type = "gre", name = "m0" }'), 'session "s1": key "output.type": must be one of tap, tun, interface, vxlan, geneve, erspan'),
    (sess(out='{ type = "vxlan", name = "m0" }'), 'session "s1": key "output.name": unknown key (expected one of: dscp, local, port, remote, source_ports, spread, ttl, type, vni)'),
    (sess(out='{ type = "tap" }'), 'session "s1": key "output.name": missing'),
    (sess(out='{ type = "tap", name = "m0", mtu = 9000 }'), 'session "s1": key "output.mtu": unknown key'),
    (sess(out='"mirror0"'), 'session "s1": key "output": must be a table'),
    (sess(inp="[]"), 'session "s1": key "input": must be a non-empty list'),
    (sess(inp='["eth1", "eth1"]'), 'session "s1": key "input": interface \'eth1\' is listed twice'),
    (sess(inp='["a/b"]'), 'session "s1": key "input": \'a/b\' is not a valid interface name'),
    (sess(inp='["waytoolonginterfacename"]'), "is not a valid interface name"),
    (sess(out='{ type = "tap", name = "eth1" }'), 'session "s1": key "output.name": \'eth1\' is also an input'),
    (sess() + sess(name="s2"), 'session "s2": key "input": interface \'eth1\' is already the input of session "s1"'),
    (sess() + sess(name="s2", inp='["eth2"]'), 'session "s2": key "output.name": \'m0\' is already the output of session "s1"'),
    (sess() + sess(name="s1", inp='["eth2"]', out='{ type = "tap", name = "m1" }'), 'session "s1": key "name": another session has the same name'),
    (sess() + sess(name="s2", inp='["eth2"]', out='{ type = "tap", name = "eth1" }'), 'session "s2": key "output.name": \'eth1\' is an input of session "s1"'),
    ('[[session]]\nname = "bad name"\n', '[[session]] #1: key "name": must be 1-64 characters'),
    ('[daemon]\nhttp = "nohost"\n', '[daemon]: key "http": must be "HOST:PORT"'),
    ('[daemon]\nhttp = "example.com:80"\n', '[daemon]: key "http": host \'example.com\' is not an IP address'),
    ('[daemon]\nruntime_dir = "run"\n', '[daemon]: key "runtime_dir": must be an absolute path'),
    ('[daemon]\nthreads = 4\n', '[daemon]: key "threads": unknown key'),
    ('[daemon]\nallowed_uids = [-1]\n', '[daemon]: key "allowed_uids": must be a list of uids'),
    ("[sessions]\n", 'top level: key "sessions": unknown key (expected [daemon] or [[session]])'),
    (sess(inp='["eth1\\n"]'), "is not a valid interface name"),
    (sess(inp='["ééééééééé"]'), "is not a valid interface name (1-15 bytes"),
    (sess(inp='[".."]'), "is not a valid interface name"),
    (sess(name="s1\\n"), '[[session]] #1: key "name": must be 1-64 characters'),
    ('[daemon]\nhttp = "127.0.0.1:\u00b2"\n', '[daemon]: key "http": must be "HOST:PORT" with a port 1-65535'),
    ('[daemon]\nallowed_uids = [4294967296]\n', '[daemon]: key "allowed_uids": must be a list of uids'),
    ("[[session]\n", "TOML syntax error"),
    (sess().replace('input = ["eth1"]\n', ""), 'session "s1": key "input": missing'),
    ('[daemon]\nhttp_max_connections = 0\n', '[daemon]: key "http_max_connections": must be between 1 and 65536, got 0'),
    ('[daemon]\ncontrol_max_connections = "8"\n', '[daemon]: key "control_max_connections": must be an integer'),
    ('[daemon]\nclient_timeout = 0\n', '[daemon]: key "client_timeout": must be a number of seconds between 0.1 and 3600, got 0'),
    ('[daemon]\nclient_timeout = nan\n', '[daemon]: key "client_timeout": must be a number of seconds'),
    ('[daemon]\nclient_timeout = "5s"\n', '[daemon]: key "client_timeout": must be a number of seconds'),
    ('[daemon]\nmax_delay_us = 20000\n', '[daemon]: key "max_delay_us": must be between 0 and 10000, got 20000'),
    ('[daemon]\nmax_delay_us = "1ms"\n', '[daemon]: key "max_delay_us": must be an integer, got str'),
    (sess().replace('[[session]]\n', '[[session]]\nwhen_listened = 1\n'),
     'session "s1": key "when_listened": must be true or false, got int 1'),
])
def test_each_mistake_is_one_line_naming_where_key_and_reason(text, expected):
    assert expected in _err(text)


def test_check_config_cli(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    r = subprocess.run([sys.executable, "-m", "mirrord", "check-config", str(good)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == f"{good}: OK, 2 sessions"
    assert "span1" in r.stdout and "1 in 100" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(sess("rate = -3"))
    r = subprocess.run([sys.executable, "-m", "mirrord", "check-config", str(bad)],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr == (f'mirrord: {bad}: session "s1": key "rate": '
                        "must be between 0 and 4294967295, got -3\n")
    assert r.stdout == ""
    r = subprocess.run([sys.executable, "-m", "mirrord", "check-config", str(tmp_path / "nope")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "cannot read: No such file or directory" in r.stderr


def test_client_limits_have_defaults_and_can_be_set():
    d = loads("").daemon
    assert (d.control_max_connections, d.http_max_connections, d.client_timeout, d.control_mode) == (64, 64, 5.0, 0o660)
    d = loads("[daemon]\ncontrol_max_connections = 8\nhttp_max_connections = 9\nclient_timeout = 2\n").daemon
    assert (d.control_max_connections, d.http_max_connections, d.client_timeout) == (8, 9, 2.0)


def test_max_ring_size_is_bounded_by_the_ring_abi():
    from mirrord._ring import lib
    from mirrord.config import DEFAULT_MAX_RING_SIZE, RING_MAX_DATA, RING_MIN_DATA

    assert (RING_MIN_DATA, RING_MAX_DATA) == (lib.MR_RING_MIN_DATA, lib.MR_RING_MAX_DATA)
    assert loads("").daemon.max_ring_size == DEFAULT_MAX_RING_SIZE == 256 << 20
    assert loads("[daemon]\nmax_ring_size = 1048576").daemon.max_ring_size == 1 << 20
    for bad, why in (("4096", "must be between 65536 and 1073741824, got 4096"),
                     ("2147483648", "must be between 65536 and 1073741824, got 2147483648"),
                     ('"1G"', "must be an integer, got str '1G'")):
        with pytest.raises(ConfigError) as e:
            loads(f"[daemon]\nmax_ring_size = {bad}")
        assert str(e.value) == f'[daemon]: key "max_ring_size": {why}'


# Interface names as the kernel takes them (net/core/dev.c dev_valid_name, and TUNSETIFF's
# '%d' template): each bad name, as an input and as an output, is refused by check-config
# with the field named, before `run` could trip over it.
BAD_NAMES = [
    ("lo\\u0000x", "contains a NUL byte"),
    ("a/b", "contains '/'"),
    ("a:b", "contains ':'"),
    ("a b", "contains ' '"),
    ("a\\tb", "contains '\\t'"),
    ("a\\u000bb", "contains '\\x0b'"),
    ("x%d", "contains '%'"),
    ("\u00e0", "contains byte 0xa0 in its UTF-8, which the kernel takes for a space"),
    ("", "is 0 bytes long"),
    ("abcdefghijklmnop", "is 16 bytes long"),
    ("\u00e9" * 8, "is 16 bytes long"),
    (".", "is reserved"),
    ("..", "is reserved"),
]


@pytest.mark.parametrize("name,why", BAD_NAMES)
@pytest.mark.parametrize("field", ["input", "output.name"])
def test_check_config_refuses_each_name_the_kernel_would(tmp_path, name, why, field):
    inp, out = (f'["{name}"]', None) if field == "input" else ('["eth1"]', f'{{ type = "tap", name = "{name}" }}')
    text = sess(inp=inp) if out is None else sess(out=out)
    msg = _err(text)
    assert msg.startswith(f'session "s1": key "{field}": '), msg
    assert "is not a valid interface name" in msg and msg.endswith(f": it {why}"), msg
    # the CLI says the same in one line, and no traceback
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    r = subprocess.run([sys.executable, "-m", "mirrord", "check-config", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f'mirrord: {cfg}: session "s1": key "{field}": ')


@pytest.mark.parametrize("name", ["eth0", "eth0.100", "a-b_c", "abcdefghijklmno", "\u00e9", "br@x"])
def test_names_the_kernel_takes_are_accepted(name):
    assert loads(sess(out=f'{{ type = "tap", name = "{name}" }}')).sessions[0].output.name == name


def test_when_listened_is_for_tap_and_tun_outputs_only():
    ok = loads('[[session]]\nname = "s"\ninput = ["eth1"]\nwhen_listened = true\n'
               'output = { type = "tun", name = "mt0" }\n')
    assert ok.sessions[0].when_listened is True
    assert loads(sess()).sessions[0].when_listened is False
    err = _err('[[session]]\nname = "s"\ninput = ["eth1"]\nwhen_listened = true\n'
               'output = { type = "interface", name = "eth9" }\n')
    assert 'session "s": key "when_listened": only for tap and tun outputs' in err
