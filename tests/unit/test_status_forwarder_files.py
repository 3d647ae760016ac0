"""`mirrord status` over forwarder status files the daemon read back (protocol.read_statuses):
a file of another version, or one written by hand, keeps what is well formed; the text view
prints the well-formed bindings and never a traceback."""
import json
import os

import pytest

from mirrord.cli import _print_forwarders
from mirrord.protocol import read_statuses

GOOD = {"ingress": "a0", "egress": "b0", "queue": 0, "rx_packets": 10, "tx_packets": 10, "dropped_tx_full": 0,
        "mirror_sampled": 4, "mirror_pushed": 4, "mirror_dropped_ring_full": 0, "mirror_dropped_no_ring": 0}


@pytest.mark.parametrize("bindings,shown", [
    ([{k: v for k, v in GOOD.items() if k != "mirror_pushed"}], "a0->b0 q0"),  # an older forwarder
    ([{k: v for k, v in GOOD.items() if k != "queue"}, {**GOOD, "ingress": "z9"}], "z9->b0 q0"),
    ([{**GOOD, "rx_packets": "many", "tx_packets": -1, "mirror_sampled": 1.5}], "a0->b0 q0"),
    ([GOOD, "b0", None, 7], "a0->b0 q0"),
    ({"a0": GOOD}, None),
    ([{**GOOD, "sessions": [{"seen": "x", "input": "a0.5", "session": "s", "vlan": 5}, "junk"]}], "a0.5 (s)"),
])
def test_a_strange_forwarder_file_prints_what_is_well_formed(tmp_path, capsys, bindings, shown):
    (tmp_path / f"forwarder-{os.getpid()}.json").write_text(json.dumps({"pid": os.getpid(), "bindings": bindings}))
    st = read_statuses(tmp_path)
    assert len(st) == 1 and isinstance(st[0]["bindings"], list)
    for b in st[0]["bindings"]:
        assert isinstance(b["ingress"], str) and type(b["queue"]) is int
        assert all(type(v) is int and v >= 0 for k, v in b.items() if k.startswith(("rx_", "tx_", "mirror_")))
    _print_forwarders(st)
    out = capsys.readouterr().out
    if shown is None:
        assert st[0]["bindings"] == [] and out.count("\n") <= 2
    else:
        assert shown in out
        row = next(line for line in out.splitlines() if line.lstrip().startswith(shown))
        assert "many" not in row and "-1" not in row and "1.5" not in row
