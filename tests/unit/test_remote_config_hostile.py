"""Remote output configs an operator can get wrong in ways the first checks missed: each is
refused with one line naming the field, never accepted to fail silently at run time."""
import pytest

from mirrord.config import ConfigError, loads

BASE = '[[session]]\nname = "s"\ninput = ["eth1"]\noutput = {}\n'
TWO = BASE + '[[session]]\nname = "t"\ninput = ["eth2"]\noutput = {}\n'


def _out(spec):
    return loads(BASE.format(spec)).sessions[0].output


@pytest.mark.parametrize("spec, msg", [
    # a float that equals 3 is not the integer 3 (it named the output "erspan3.0-...")
    ('{ type = "erspan", remote = "192.0.2.1", version = 3.0 }', 'key "output.version": must be 2'),
    # a link-local IPv6 address needs an interface (a scope) that the raw socket never gets:
    # every copy would fail with EINVAL at run time
    ('{ type = "vxlan", remote = "fe80::1" }', "link-local"),
    ('{ type = "vxlan", remote = "fe80::1%eth0" }', "link-local"),
    ('{ type = "vxlan", remote = "2001:db8::1", local = "fe80::1" }', "link-local"),
])
def test_remote_values_refused_with_the_field(spec, msg):
    with pytest.raises(ConfigError) as e:
        _out(spec)
    assert msg in str(e.value) and "\n" not in str(e.value) and str(e.value).startswith('session "s": key "output.')


@pytest.mark.parametrize("a, b", [
    ('["192.0.2.1", "192.0.2.2"]', '["192.0.2.2", "192.0.2.1"]'),   # the same collectors, another order
    ('"192.0.2.1"', '["192.0.2.1", "192.0.2.3"]'),                    # one collector in common
])
def test_same_vni_to_a_shared_collector_is_refused(a, b):
    spec = '{{ type = "vxlan", remote = {}, vni = 42, spread = "flow" }}'
    with pytest.raises(ConfigError) as e:
        loads(TWO.format(spec.format(a), spec.format(b)))
    assert str(e.value).startswith('session "t": key "output.vni": session "s" already sends to 192.0.2.')
    # another VNI to the same collectors is fine
    loads(TWO.format(spec.format(a), spec.format(b).replace("42", "43")))
