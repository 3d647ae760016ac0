"""Ring labels are unique: two attached rings with the same file name (one moved away
while its producer runs, a new one made under the name) are two series in /metrics, not
one label set twice."""
import collections

import pytest
from prometheus_client.parser import text_string_to_metric_families
from fixtures.sessions import S1, sid

from mirrord.ring import Producer

pytestmark = pytest.mark.root


def test_two_rings_with_one_file_name_get_distinct_labels(daemon, tmp_path):
    d = daemon(S1)
    s1 = sid(S1, "s1")
    frame = bytes.fromhex("020000000002020000000001") + b"\x88\xb5" + b"l" * 50
    with Producer(d.run_dir / "a.ring", data_size=1 << 16) as first:
        d.wait_for(lambda st: len(st["rings"]) == 1, what="first ring attached")
        (tmp_path / "old").mkdir()
        (d.run_dir / "a.ring").rename(tmp_path / "old" / "a.ring")  # `mv` while attached
        with Producer(d.run_dir / "a.ring", data_size=1 << 16) as second:
            st = d.wait_for(lambda st: len(st["rings"]) == 2, what="second ring attached")
            for _ in range(3):
                assert first.push(frame, session_id=s1)
            for _ in range(5):
                assert second.push(frame, session_id=s1)
            st = d.wait_for(lambda st: sum(r["consumed_packets"] for r in st["rings"]) == 8, what="drained")
            code, text = d.http_get("/metrics")
    assert code == 200
    assert sorted(r["name"] for r in st["rings"]) == ["a.ring", "a.ring#2"]
    samples = [(s.name, tuple(sorted(s.labels.items())), s.value)
               for fam in text_string_to_metric_families(text) for s in fam.samples]
    dup = [k for k, n in collections.Counter((name, labels) for name, labels, _ in samples).items() if n > 1]
    assert dup == [], f"series with the same labels twice: {dup}"
    pushed = {dict(labels)["ring"]: v for name, labels, v in samples if name == "mirrord_ring_pushed_packets_total"}
    assert pushed == {"a.ring": 3, "a.ring#2": 5}
    assert d.session("s1")["counters"]["mirrored_packets"] == 8
