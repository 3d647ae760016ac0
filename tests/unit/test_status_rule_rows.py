"""`mirrord status`: the per (binding, session) rows under a binding that VLAN inputs split
line up with the binding's header, so each number stands under its own column name."""
from mirrord.cli import _print_forwarders


def test_rule_rows_put_each_counter_under_its_column(capsys):
    rule = {"input": "a0.100", "session": "sub", "vlan": 100, "session_id": 7, "seen": 1001,
            "filtered": 1002, "sampled": 1003, "pushed": 1004, "dropped_ring_full": 1005,
            "dropped_no_ring": 1006, "dropped_ring_lost": 0}
    binding = {"ingress": "a0", "egress": "b0", "queue": 0, "rx_packets": 5000, "tx_packets": 5000,
               "dropped_tx_full": 0, "dropped_tx_down": 0, "mirror_filtered": 2002, "mirror_sampled": 2003,
               "mirror_pushed": 2004, "mirror_dropped_ring_full": 2005, "mirror_dropped_no_ring": 2006,
               "sessions": [rule, {**rule, "input": "a0", "session": "parent", "vlan": 0}]}
    _print_forwarders([{"pid": 1, "bindings": [binding]}])
    lines = capsys.readouterr().out.splitlines()
    head = next(ln for ln in lines if ln.startswith("forwarder binding"))
    row = next(ln for ln in lines if "a0.100 (sub)" in ln)
    for col, value in (("filtered", "1002"), ("sampled", "1003"), ("pushed", "1004"), ("ring_full", "1005"),
                       ("no_ring", "1006")):
        end = head.index(col) + len(col)  # right-aligned under its name
        assert row[:end].endswith(value), (col, head, row)
