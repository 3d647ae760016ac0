"""What check-config accepts, the fast path takes (invariant 5): the tap's bounds on a
binding's table (tap.h: MR_TAP_MAX_TABLE_INSNS filter instructions over all the rules of
one interface) are the config's bounds too, and a daemon's `config` reply beyond them is
refused by the forwarder before any binding changes."""
import pytest

from mirrord.config import ConfigError, loads
from mirrord.filter import compile_filter
from mirrord.forwarder.follow import tables

P = "mrbndp0"  # no test machine has it: P.N is read by its spelling
# 110 protochain loops: 3844 instructions, under the 4096 of one program
BIG = " or ".join(f"ip6 protochain {i}" for i in range(110))


def S(name, inp, out, flt=BIG):
    return (f'[[session]]\nname = "{name}"\ninput = {inp}\nfilter = "{flt}"\n'
            f'output = {{ type = "tap", name = "{out}" }}\n')


def five_on_one_interface():
    return "".join(S(f"s{n}", f'["{inp}"]', f"m{n}")
                   for n, inp in enumerate([P, f"{P}.10", f"{P}.11", f"{P}.12", f"{P}.13"]))


def test_big_filters_on_one_interface_beyond_the_taps_table_are_refused_by_name():
    assert len(compile_filter(BIG)) // 8 > 3800
    with pytest.raises(ConfigError) as e:
        loads(five_on_one_interface())
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith('session "s4": key "filter": ') and repr(P) in msg and "16384" in msg


def test_the_same_filters_spread_over_interfaces_are_fine():
    c = loads("".join(S(f"s{n}", f'["{P}{n}", "{P}{n}.7"]', f"m{n}") for n in range(5)))
    assert len(c.sessions) == 5


def test_a_config_reply_beyond_the_taps_table_is_refused_before_any_binding_changes():
    prog = compile_filter(BIG)
    sessions = [{"name": f"s{n}", "id": n + 1, "input": [f"{P}.{10 + n}"], "rate": 1, "run_length": 0,
                 "max_packet_length": 0, "filter": BIG, "filter_program": prog,
                 "inputs": [{"interface": P, "vlan": 10 + n, "name": f"{P}.{10 + n}"}]} for n in range(5)]
    with pytest.raises(ValueError, match=r"16384"):
        tables([(P, "x0"), ("x0", P)], {"instance": "i", "generation": 1, "sessions": sessions})


def test_a_config_reply_with_more_vlan_rules_than_the_tap_takes_is_refused():
    sessions = [{"name": "s", "id": 1, "input": [f"{P}.{v}" for v in range(1, 70)], "rate": 1,
                 "run_length": 0, "max_packet_length": 0}]
    with pytest.raises(ValueError, match=r"VLAN"):
        tables([(P, "x0"), ("x0", P)], {"instance": "i", "generation": 1, "sessions": [
            {**sessions[0], "inputs": [{"interface": P, "vlan": v, "name": f"{P}.{v}"} for v in range(1, 70)]}]})
