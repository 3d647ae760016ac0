"""Status sums every ring's route counters per session in C (one call per ring): the sum
equals the per-route counters the real drain produced, and the routes with a sink errno
are found without reading every row."""
import errno
import os

from mirrord.ring import DRAIN_WRITE, Consumer, Producer, Routes, sum_stats

FRAME = bytes.fromhex("020000000002020000000001") + b"\x88\xb5" + b"q" * 50


def test_sums_over_rings_equal_the_drains_and_errnos_are_found(tmp_path):
    r, w = os.pipe()
    os.close(r)  # writes fail with EPIPE: a sink error with its errno
    tables = []
    pushes = [(3, 5, 7), (11, 0, 2)]  # per ring: copies for sessions 1, 2, 3
    try:
        for k, counts in enumerate(pushes):
            with Producer(tmp_path / f"{k}.ring", data_size=1 << 16) as p:
                for sid, n in zip((1, 2, 3), counts):
                    for _ in range(n):
                        assert p.push(FRAME, session_id=sid)
                routes = Routes([(1, -1, DRAIN_WRITE), (2, w, DRAIN_WRITE), (3, -1, DRAIN_WRITE)])
                with Consumer.open(p.path) as c:
                    assert c.drain_routes(routes, 1 << 10) == sum(counts)
                tables.append(routes)
    finally:
        os.close(w)
    words = sum_stats(tables, 3)
    per = len(words) // 3
    no_output = [words[i * per + 5] for i in range(3)]
    drop_error = [words[i * per + 3] for i in range(3)]
    assert no_output == [14, 0, 9] and drop_error == [0, 5, 0]
    fields = ("packets", "bytes", "dropped_busy", "dropped_error", "dropped_not_ip", "dropped_no_output",
              "truncated")
    for i in range(3):  # every counter of every session is the sum of the rings' own
        assert words[i * per:i * per + len(fields)] == [sum(getattr(t.stats(i), f) for t in tables) for f in fields]
        assert words[i * per + len(fields):(i + 1) * per] == [0] * (per - len(fields))  # last_errno: not summed
    assert [list(t.errno_routes()) for t in tables] == [[1], []]  # the second ring sent none to session 2
    assert tables[0].take_errno(1) == errno.EPIPE and list(tables[0].errno_routes()) == []
