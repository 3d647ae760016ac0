"""VLAN inputs in the config (issue 17): the two spellings, mixed with plain names; one
input per (interface, VLAN) across sessions, each refusal one line naming both sessions;
eth1 and eth1.100 in two sessions allowed; the VID range and the bound per interface."""
import pytest

from mirrord.config import MAX_VLAN_INPUTS, ConfigError, Input, loads


def S(name, inp, out):
    return f'[[session]]\nname = "{name}"\ninput = {inp}\noutput = {{ type = "tap", name = "{out}" }}\n'


# names no test machine has: the NAME.N spelling decides
P = "mrvlanp0"


def test_spellings_mixed():
    c = loads(S("a", f'["{P}", "{P}.100", {{ interface = "{P}x", vlan = 7 }}]', "m0"))
    s = c.sessions[0]
    assert s.ingress == (Input(P, 0, P), Input(P, 100, f"{P}.100"), Input(f"{P}x", 7, f"{P}x.7"))
    assert s.input == (P, f"{P}.100", f"{P}x.7")


def test_parent_and_subinterface_in_two_sessions():
    c = loads(S("parent", f'["{P}"]', "m0") + S("sub", f'["{P}.100"]', "m1"))
    assert [s.ingress for s in c.sessions] == [(Input(P, 0, P),), (Input(P, 100, f"{P}.100"),)]


@pytest.mark.parametrize("second", [f'["{P}.100"]', f'[{{ interface = "{P}", vlan = 100 }}]'])
def test_duplicate_across_sessions_names_both(second):
    with pytest.raises(ConfigError) as e:
        loads(S("a", f'["{P}.100"]', "m0") + S("b", second, "m1"))
    msg = str(e.value)
    assert msg == f'session "b": key "input": \'{P}.100\' ({P} VLAN 100) is already the input of session "a"'
    assert "\n" not in msg


def test_duplicate_within_a_session():
    with pytest.raises(ConfigError, match=r'session "a": key "input": .* is listed twice'):
        loads(S("a", f'["{P}.100", {{ interface = "{P}", vlan = 100 }}]', "m0"))


@pytest.mark.parametrize("inp, why", [
    (f'[{{ interface = "{P}", vlan = 0 }}]', 'key "input.vlan": VLAN ID must be between 1 and 4094, got 0'),
    (f'[{{ interface = "{P}", vlan = 4095 }}]', 'key "input.vlan": VLAN ID must be between 1 and 4094, got 4095'),
    (f'[{{ interface = "{P}", vlan = "9" }}]', 'key "input.vlan": must be a VLAN ID (an integer 1-4094)'),
    (f'["{P}.4095"]', "a VLAN ID is 1-4094"),
    (f'["{P}.0"]', "a VLAN ID is 1-4094"),
    (f'[{{ vlan = 3 }}]', 'key "input.interface": missing'),
    (f'[{{ interface = "{P}", vid = 3 }}]', 'key "input.vid": unknown key'),
    (f'[{{ interface = "a/b", vlan = 3 }}]', 'key "input.interface"'),
])
def test_refusals(inp, why):
    with pytest.raises(ConfigError) as e:
        loads(S("a", inp, "m0"))
    assert why in str(e.value) and str(e.value).startswith('session "a": ') and "\n" not in str(e.value)


def test_bound_per_interface():
    ok = ", ".join(f'"{P}.{v}"' for v in range(1, MAX_VLAN_INPUTS + 1))
    loads(S("a", f"[{ok}]", "m0"))
    with pytest.raises(ConfigError, match=f"has more than {MAX_VLAN_INPUTS} VLAN inputs"):
        loads(S("a", f"[{ok}]", "m0") + S("b", f'["{P}.4000"]', "m1"))
