"""A mirror loop through a VLAN label: the output is the interface a VLAN input is on.  The
forwarder binds that interface (a VLAN input is its parent's frames with that VID), so
copies written there come back on a binding that mirrors them again: refused as the
plain `input = ["m0"]` with output m0 is (docs/configuration.md, section 5)."""
import pytest

from mirrord.config import ConfigError, loads

P = "mrlp0"  # no such device: P.N is read by its spelling


def S(name, inp, out):
    return f'[[session]]\nname = "{name}"\ninput = {inp}\noutput = {{ type = "tap", name = "{out}" }}\n'


@pytest.mark.parametrize("inp", [f'["{P}.100"]', f'[{{ interface = "{P}", vlan = 100 }}]'])
def test_output_on_the_parent_of_the_same_sessions_vlan_input_is_a_loop(inp):
    with pytest.raises(ConfigError, match=r'session "a": key "output.name": .*mirror loop'):
        loads(S("a", inp, P))


@pytest.mark.parametrize("inp", [f'["{P}.100"]', f'[{{ interface = "{P}", vlan = 100 }}]'])
def test_output_on_the_parent_of_another_sessions_vlan_input_is_a_loop(inp):
    with pytest.raises(ConfigError, match=r'session "b": key "output.name": .*session "a" \(a mirror loop\)'):
        loads(S("a", inp, "m1") + S("b", '["x9"]', P))


def test_an_output_named_like_a_vlan_label_of_another_interface_is_fine():
    # output "mrlp0.7" is a TAP of that name, not mrlp0: no binding of the inputs sees it
    assert len(loads(S("a", f'["{P}"]', f"{P}x") + S("b", '["x9"]', f"{P}y.7")).sessions) == 2
