"""/metrics over forwarder status files (runtime_dir/forwarder-<pid>.json, written by any
`mirrord forward`, of any version, read back by the daemon): a file without a key, or with
a field of the wrong type, leaves that series out; it never breaks the whole scrape."""
import pytest
from prometheus_client import generate_latest

from mirrord.daemon.metrics import make_registry

BASE = {"sessions": [], "rings": [], "generation": 1, "last_reload_ok": True, "ready": True,
        "instance": "i"}
GOOD = {"ingress": "a0", "queue": 0, "rx_packets": 10, "mirror_sampled": 4, "mirror_pushed": 4,
        "mirror_dropped_ring_full": 0, "mirror_dropped_no_ring": 0, "mirror_dropped_ring_lost": 0}


@pytest.mark.parametrize("bindings", [
    [{k: v for k, v in GOOD.items() if k != "mirror_dropped_ring_lost"}],  # a forwarder before ring_lost
    [{k: v for k, v in GOOD.items() if k != "queue"}, GOOD],
    [GOOD, {**GOOD, "ingress": "b0", "rx_packets": "many"}],
    [GOOD, "b0"],
    {"a0": GOOD},
    [GOOD, {**GOOD, "ingress": "c0", "sessions": [{"seen": "x", "input": "c0", "session": "s"}]}],
])
def test_a_strange_forwarder_file_does_not_break_the_scrape(bindings):
    fwd = [{"pid": 4242, "generation": 1, "instance": "i", "bindings": bindings},
           {"pid": 4343, "generation": 1, "instance": "i", "bindings": [{**GOOD, "ingress": "z9"}]}]
    text = generate_latest(make_registry(lambda: {**BASE, "forwarders": fwd})).decode()
    # the well-formed forwarder's binding is there whatever the other one holds
    assert 'mirrord_forwarder_rx_packets_total{interface="z9",queue="0"} 10.0' in text
