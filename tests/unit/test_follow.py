"""The forwarder's reading of the daemon's `config` reply (mirrord/follow.py): per binding
the table of the session whose input is its ingress; a malformed reply names the field."""
import pytest

from mirrord.forwarder.follow import OFF, Rule, tables

BINDINGS = [("a0", "b0"), ("b0", "a0"), ("c0", "d0"), ("d0", "c0")]


def snap(**over):
    s = {"name": "span", "id": 7, "input": ["a0", "d0"], "rate": 10, "run_length": 2, "max_packet_length": 64}
    s.update(over)
    return {"instance": "x", "generation": 3, "sessions": [s]}


def test_each_binding_gets_the_table_of_its_ingress_session():
    a0, d0 = Rule(0, 7, 10, 2, 64, session="span", input="a0"), Rule(0, 7, 10, 2, 64, session="span", input="d0")
    assert tables(BINDINGS, snap()) == [(a0,), OFF, OFF, (d0,)]
    assert tables(BINDINGS, {"sessions": []}) == [OFF] * 4


@pytest.mark.parametrize("over,field", [
    ({"rate": -1}, '"rate"'), ({"id": 1 << 32}, '"id"'), ({"run_length": "3"}, '"run_length"'),
    ({"max_packet_length": True}, '"max_packet_length"'), ({"input": "a0"}, '"input"'),
    ({"input": [1]}, '"input"'),
])
def test_a_bad_field_is_refused_by_name(over, field):
    with pytest.raises(ValueError, match=field):
        tables(BINDINGS, snap(**over))


def test_a_reply_without_sessions_is_refused():
    with pytest.raises(ValueError, match='"sessions"'):
        tables(BINDINGS, {"generation": 1})
    with pytest.raises(ValueError, match=r"sessions\[0\]"):
        tables(BINDINGS, {"sessions": ["span"]})


def test_vlan_inputs_go_to_the_parents_bindings():
    """eth1.100 and eth1 in two sessions: binding a0 gets a default rule (its own session)
    and a rule for VID 100; an input whose label is a binding's ingress (a VLAN device
    forwarded itself) is that binding's default rule."""
    sub = {"name": "sub", "id": 9, "input": ["a0.100", "b0.5"], "rate": 3, "run_length": 0, "max_packet_length": 0,
           "inputs": [{"interface": "a0", "vlan": 100, "name": "a0.100"},
                      {"interface": "c0", "vlan": 5, "name": "b0.5"}]}
    snap_ = {"sessions": [snap(input=["a0"], inputs=[{"interface": "a0", "vlan": 0, "name": "a0"}])["sessions"][0],
                          sub]}
    t = tables(BINDINGS + [("b0.5", "x")], snap_)
    assert t[0] == (Rule(0, 7, 10, 2, 64, session="span", input="a0"), Rule(100, 9, 3, 0, 0, session="sub", input="a0.100"))
    assert t[1] == OFF and t[3] == OFF
    assert t[2] == (Rule(5, 9, 3, 0, 0, session="sub", input="b0.5"),)
    assert t[4] == (Rule(0, 9, 3, 0, 0, session="sub", input="b0.5"),)


@pytest.mark.parametrize("inputs", [[{"interface": "a0", "vlan": 4095, "name": "x"}], [{"interface": "a0"}], "a0",
                                    [{"interface": 1, "vlan": 1, "name": "x"}]])
def test_bad_inputs_are_refused(inputs):
    with pytest.raises(ValueError, match='"inputs"'):
        tables(BINDINGS, snap(inputs=inputs))
