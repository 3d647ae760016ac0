"""Remote outputs without privileges: config errors (one line, the field and the reason),
the symmetric flow hash and rendezvous hashing (native, through mirrord._ring)."""

import pytest
from fixtures.frames import eth, ipv4_udp

from mirrord._ring import lib
from mirrord.config import ConfigError, loads
from mirrord.sinks.remote import Encap

BASE = '[[session]]\nname = "s"\ninput = ["eth1"]\noutput = {}\n'


def _out(spec):
    return loads(BASE.format(spec)).sessions[0].output


@pytest.mark.parametrize("spec, msg", [
    ('{ type = "vxlan", remote = "192.0.2.10", vni = 16777216 }',
     'key "output.vni": must be between 0 and 16777215, got 16777216'),
    ('{ type = "vxlan", remote = ["192.0.2.10", "192.0.2.11"] }',
     'key "output.spread": missing: 2 collectors need spread = "flow"'),
    ('{ type = "geneve", remote = "192.0.2.300" }', "key \"output.remote\": '192.0.2.300' is not an IPv4 or IPv6"),
    ('{ type = "erspan", remote = "192.0.2.1", session_id = 1024 }',
     'key "output.session_id": must be between 0 and 1023, got 1024'),
    ('{ type = "erspan", remote = "192.0.2.1", version = 1 }', 'key "output.version": must be 2'),
    ('{ type = "erspan", remote = "192.0.2.1", vni = 3 }', 'key "output.vni": only for vxlan and geneve'),
    ('{ type = "vxlan", remote = "192.0.2.1", local = "2001:db8::1" }',
     'key "output.local": 2001:db8::1 is IPv6 but collector 192.0.2.1 is IPv4'),
    ('{ type = "vxlan", remote = "224.0.0.5" }', "is a multicast address"),
    ('{ type = "vxlan", remote = "192.0.2.1", spread = "packet" }', 'key "output.spread": must be "flow"'),
    ('{ type = "vxlan", remote = "192.0.2.1", ttl = 0 }', 'key "output.ttl": must be between 1 and 255'),
    ('{ type = "vxlan", remote = "192.0.2.1", dscp = 64 }', 'key "output.dscp": must be between 0 and 63'),
    ('{ type = "vxlan", remote = ["192.0.2.1", "192.0.2.1"], spread = "flow" }', "192.0.2.1 is listed twice"),
    ('{ type = "vxlan" }', 'key "output.remote": missing'),
    ('{ type = "vxlan", remote = "192.0.2.1", source_ports = 0 }',
     'key "output.source_ports": must be between 1 and 64, got 0'),
    ('{ type = "geneve", remote = "192.0.2.1", source_ports = 65 }',
     'key "output.source_ports": must be between 1 and 64, got 65'),
    ('{ type = "erspan", remote = "192.0.2.1", source_ports = 4 }',
     'key "output.source_ports": only for vxlan and geneve'),
])
def test_bad_remote_output_is_one_line_naming_the_field(spec, msg):
    with pytest.raises(ConfigError) as e:
        _out(spec)
    assert msg in str(e.value) and "\n" not in str(e.value) and str(e.value).startswith('session "s": key "output.')


def test_good_remote_outputs_parse():
    o = _out('{ type = "erspan", remote = "2001:db8::10", version = 3, session_id = 5 }')
    assert (o.type, o.name, o.remote.version, o.remote.session_id) == ("erspan", "erspan3-session5@2001:db8::10", 3, 5)
    o = _out('{ type = "geneve", remote = ["192.0.2.10", "192.0.2.11"], vni = 7, spread = "flow" }')
    assert o.remote.port == 6081 and o.remote.remote == ("192.0.2.10", "192.0.2.11")
    two = BASE.format('{ type = "vxlan", remote = "192.0.2.10", vni = 1 }')
    with pytest.raises(ConfigError, match='session "t": key "output.vni": session "s" already sends'):
        loads(two + two.replace('"s"', '"t"').replace("eth1", "eth2"))


def _hash(f):
    return lib.mr_flow__hash(f, len(f))


def test_flow_hash_is_symmetric_and_skips_vlan_tags():
    for i in range(50):
        a, b = f"10.0.{i}.1", f"10.9.{i}.2"
        fwd = eth(0x0800, ipv4_udp(b"x", src=a, dst=b, sport=1000 + i, dport=443))
        rev = eth(0x0800, ipv4_udp(b"yy", src=b, dst=a, sport=443, dport=1000 + i))
        tagged = eth(0x0800, ipv4_udp(b"z", src=a, dst=b, sport=1000 + i, dport=443), tags=((0x8100, 5),))
        assert _hash(fwd) == _hash(rev) == _hash(tagged)
    assert len({_hash(eth(0x0800, ipv4_udp(b"x", sport=p))) for p in range(1000, 1100)}) == 100


def _encap(addrs):
    e = Encap(_out('{ type = "geneve", remote = [%s], spread = "flow" }' % ", ".join(f'"{a}"' for a in addrs)))
    return e


def test_rendezvous_moves_only_the_removed_collectors_flows():
    four = [f"192.0.2.{i}" for i in range(1, 5)] + ["2001:db8::9"]
    full = _encap(four)
    less = _encap([a for a in four if a != "192.0.2.3"])
    more = _encap([*four, "192.0.2.77"])
    counts = {}
    for h in range(20000):
        hh = (h * 2654435761) & 0xFFFFFFFF
        a = four[lib.mr_encap__pick(full.ptr, hh)]
        b = less.addresses[lib.mr_encap__pick(less.ptr, hh)]
        c = more.addresses[lib.mr_encap__pick(more.ptr, hh)]
        counts[a] = counts.get(a, 0) + 1
        if a != "192.0.2.3":
            assert b == a  # a flow of a collector still there stays there
        assert c in (a, "192.0.2.77")  # a new collector only takes flows, never shuffles others
    assert all(3000 < n < 5000 for n in counts.values()), counts  # and the load is spread evenly
