"""The forwarder's reading of the daemon's `config` reply (mirrord/follow.py): per binding
the table of the session whose input is its ingress; a malformed reply names the field."""
import pytest

from mirrord.forwarder.follow import OFF, tables

BINDINGS = [("a0", "b0"), ("b0", "a0"), ("c0", "d0"), ("d0", "c0")]


def snap(**over):
    s = {"name": "span", "id": 7, "input": ["a0", "d0"], "rate": 10, "run_length": 2, "max_packet_length": 64}
    s.update(over)
    return {"instance": "x", "generation": 3, "sessions": [s]}


def test_each_binding_gets_the_table_of_its_ingress_session():
    assert tables(BINDINGS, snap()) == [(7, 10, 2, 64), OFF, OFF, (7, 10, 2, 64)]
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
