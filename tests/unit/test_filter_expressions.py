"""The filter-equivalence harness checked without root: the generated frames are the same on
every run, and each expression of the lab test (tests/linux/test_filter_equivalence.py)
discriminates, as tcpdump -r judges it: it keeps some frames and drops others."""
import hashlib
import shutil

import pytest
from fixtures.frames import read_pcap, write_pcap
from fixtures.varied_frames import EMPTY_EXPRESSIONS, EXPRESSIONS, varied_frames

pytestmark = pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed")


@pytest.fixture(scope="module")
def pcap(tmp_path_factory):
    frames = varied_frames()
    path = tmp_path_factory.mktemp("varied") / "varied.pcap"
    write_pcap(path, frames)
    return frames, path


def test_frames_are_seeded_distinct_and_read_back_as_written(pcap):
    frames, path = pcap
    assert varied_frames() == frames  # deterministic
    assert varied_frames(seed=17) != frames
    assert len(frames) == 3000 and len(set(frames)) == 3000
    assert 60 <= min(map(len, frames)) and max(map(len, frames)) <= 1500
    assert read_pcap(path) == (1, frames)


def test_the_mix_has_every_kind_it_promises(pcap, tmp_path):
    from fixtures.varied_frames import tcpdump_selects

    _, path = pcap
    for expr in ("vlan 100", "vlan 200", "ether proto 0x88a8", "ip6[6] == 0", "ip6 protochain 43",
                 "ip6 protochain 44", "ip[6:2] & 0x1fff != 0", "ip[6:2] & 0x3fff == 0x2000",
                 "mpls and not mpls", "mpls and mpls", "ether proto 0x88cc", "arp", "greater 1000",
                 "less 100", "tcp[tcpflags] == tcp-syn", "tcp[tcpflags] == tcp-syn|tcp-ack", "icmp", "icmp6",
                 "port 53", "port 80", "port 443", "ip6 and tcp", "ip6 and udp"):
        assert tcpdump_selects(path, expr, tmp_path / "sel.pcap"), expr


@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_each_expression_keeps_some_frames_and_drops_others(pcap, tmp_path, expr):
    from fixtures.varied_frames import tcpdump_selects

    frames, path = pcap
    sel = tcpdump_selects(path, expr, tmp_path / "sel.pcap")
    print(f"{expr!r}: {len(sel)} of {len(frames)}")
    assert 0 < len(sel) < len(frames)
    it = iter(frames)  # a subsequence: in order, every selected frame one of ours
    assert all(any(s == f for f in it) for s in sel)


@pytest.mark.parametrize("expr", EMPTY_EXPRESSIONS)
def test_the_kept_empty_expressions_are_empty_for_tcpdump(pcap, tmp_path, expr):
    from fixtures.varied_frames import tcpdump_selects

    _, path = pcap
    with pytest.raises(AssertionError, match="expression rejects all packets"):
        tcpdump_selects(path, expr, tmp_path / "sel.pcap")
    assert tcpdump_selects(path, expr, tmp_path / "sel.pcap", optimize=False) == []


def test_the_selections_differ(pcap, tmp_path):
    """No two expressions pick the same frames, so a filter applied for the wrong one shows."""
    from fixtures.varied_frames import tcpdump_selects

    _, path = pcap
    digests = {}
    for expr in EXPRESSIONS:
        sel = tcpdump_selects(path, expr, tmp_path / "sel.pcap")
        digests.setdefault(hashlib.sha256(b"".join(sel)).hexdigest(), []).append(expr)
    assert [v for v in digests.values() if len(v) > 1] == []
