"""mr_client__rules (native/src/client.c): an embedder's tap gets the whole table of its
ingress from the daemon -- the filtered session's program, the VLAN inputs' rules -- exactly
as the reference forwarder computes it (mirrord/forwarder/follow.py, tables()).

native/tests/test_client_rules.c uses the public headers only.  It is built twice: linked
against the libmirrord.so.0 that `make lib` builds (what an embedder links: the symbol is
exported), and from the sources under ASan/UBSan (the hostile replies).  The Rust crate's
examples/rules.rs does the same through the crate (Client::rules, TapHandle::set_table),
built by cargo, and is run by the same tests.  No root: the
sessions' outputs are interfaces that do not exist and the inputs are never bound; the
frames are offered by the test program itself, and the test reads its ring file back."""
import os
import random
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import msgpack
import pytest

from fixtures.cargo import CRATE
from fixtures.cargo import run as cargo_run
from fixtures.daemon import DaemonProc
from fixtures.sessions import sid
from mirrord.filter import compile_filter
from mirrord.forwarder.follow import tables
from mirrord.ring import Consumer

ROOT = Path(__file__).resolve().parents[2]
TEST_C = ROOT / "native/tests/test_client_rules.c"
SOURCES = [TEST_C, *(ROOT / "native/src" / f for f in ("tap.c", "ring.c", "guard.c", "client.c"))]
CFLAGS = ["-std=gnu11", "-g", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{ROOT / 'native/include'}"]
ASAN = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
EPROTO = 71

# a filtered session on a parent interface, a VLAN input session (with a filter of its
# own) on the same interface, and a session elsewhere
CONFIG = """
[[session]]
name = "dns"
input = ["mrcr0"]
filter = "udp dst port 53"
output = { type = "interface", name = "mrcno0" }

[[session]]
name = "v100"
input = ["mrcr0.100"]
filter = "vlan and udp"
rate = 2
max_packet_length = 100
output = { type = "interface", name = "mrcno1" }

[[session]]
name = "other"
input = ["mrcr1"]
rate = 5
run_length = 2
output = { type = "interface", name = "mrcno2" }
"""


def _cc() -> str:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    return cc


@pytest.fixture(scope="module")
def exe_asan(tmp_path_factory):
    out = tmp_path_factory.mktemp("rules-asan") / "test_client_rules"
    r = subprocess.run([_cc(), *CFLAGS, *ASAN, *map(str, SOURCES), "-lpcap", "-lpthread", "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def exe_lib(libmirrord_dir, tmp_path_factory):
    """Linked against libmirrord.so.0 as `make lib` builds it (the version script applied)."""
    lib = libmirrord_dir
    out = tmp_path_factory.mktemp("rules-exe") / "test_client_rules"
    r = subprocess.run([_cc(), *CFLAGS, str(TEST_C), f"-L{lib}", f"-Wl,-rpath,{lib}", "-lmirrord", "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def exe_rust():
    cargo_run("build", "--example", "rules")
    return CRATE / "target/debug/examples/rules"


def _table(stdout: str) -> tuple[dict, list[tuple]]:
    """The program's result line, and its rules as (vid, session_id, rate, run_length,
    max_len, filter bytes), the fields of follow.Rule that reach the tap."""
    lines = stdout.splitlines()
    res = lines[0]
    assert res.startswith("result "), stdout
    head = dict(f.split("=", 1) for f in res.split(" err=")[0].split()[1:])
    head["err"] = res.split(" err=", 1)[1]
    rules = []
    for line in lines[1:]:
        if line.startswith("table "):
            head.update(dict(f.split("=", 1) for f in line.split()[1:]))
        elif line.startswith("rule "):
            assert "OUTSIDE" not in line, line
            f = dict(x.split("=", 1) for x in line.split()[1:])
            rules.append((int(f["vid"]), int(f["session_id"]), int(f["rate"]), int(f["run_length"]),
                          int(f["max_len"]), bytes.fromhex(f["filter"]), int(f["flags"])))
    return head, rules


def _py(snapshot: dict, ingress: str) -> list[tuple]:
    (table,) = tables([(ingress, "q0")], snapshot)
    return [(r.vid, r.session_id, r.rate, r.run_length, r.max_len, r.filter, 1 if r.when_listened else 0)
            for r in table]


def _ask(exe: Path, sock: Path, ingress: str) -> tuple[dict, list[tuple]]:
    r = subprocess.run([str(exe), str(sock), ingress], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr, f"rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    return _table(r.stdout)


@pytest.fixture
def daemon_cr(tmp_path):
    d = DaemonProc(tmp_path, CONFIG).start()
    yield d
    d.stop()


@pytest.mark.parametrize("build", ["lib", "asan", "rust"])
def test_rules_equal_the_reference_forwarders_tables(build, request, daemon_cr):
    exe = request.getfixturevalue(f"exe_{build}")
    snap = daemon_cr.request({"op": "config"})["config"]
    dns, v100, other = (sid(CONFIG, n) for n in ("dns", "v100", "other"))
    for ingress, want in [
        # the parent: its own filtered session first, then VID 100's rule with its filter
        ("mrcr0", [(0, dns, 1, 0, 0, compile_filter("udp dst port 53"), 0),
                   (100, v100, 2, 0, 100, compile_filter("vlan and udp"), 0)]),
        # the VLAN device forwarded by itself: the VLAN input's session as its default rule
        ("mrcr0.100", [(0, v100, 2, 0, 100, compile_filter("vlan and udp"), 0)]),
        ("mrcr1", [(0, other, 5, 2, 0, b"", 0)]),
        ("mrcr9", []),
    ]:
        head, got = _ask(exe, daemon_cr.sock, ingress)
        assert (head["rc"], head["untouched"]) == ("0", "0"), head
        assert got == _py(snap, ingress) == want, ingress
        assert (head["generation"], head["instance"]) == (str(snap["generation"]), snap["instance"])
        assert int(head["n"]) == len(want)
        assert int(head["ninsns"]) == sum(len(w[5]) for w in want) // 8


def _eth(vid: int | None, proto: int, dport: int, payload: int, k: int) -> bytes:
    """A frame: broadcast from 02:..:01, an 802.1Q tag if vid, IPv4 with UDP (17) or TCP (6)
    to dport, then `payload` bytes numbered by k."""
    mac = b"\xff" * 6 + bytes.fromhex("020000000001")
    tag = struct.pack("!HH", 0x8100, vid) if vid is not None else b""
    l4 = struct.pack("!HHHH", 40000 + k, dport, 8 + payload, 0) if proto == 17 else \
        struct.pack("!HHIIBBHHH", 40000 + k, dport, k, 0, 0x50, 0x02, 8192, 0, 0)
    body = l4 + bytes((k * 7 + i) & 0xFF for i in range(payload))
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), k, 0, 64, proto, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    return mac + tag + b"\x08\x00" + ip + body


@pytest.mark.parametrize("build", ["lib", "rust"])
def test_an_embedded_tap_holds_exactly_the_expected_copies(build, request, daemon_cr, tmp_path):
    """The table from mr_client__rules straight into mr_tap__set_rules: VID 100 frames go to
    v100 (its filter, rate 2, truncated to 100 bytes, tags intact), untagged DNS to dns, and
    everything else (untagged non-DNS, VID 100 TCP, VID 200 DNS -- VID 200 has no rule, so
    the parent's filter sees a tagged frame and rejects it) nowhere."""
    exe = request.getfixturevalue(f"exe_{build}")
    frames, want = [], []
    counts = {"v100_passed": 0}
    for k in range(120):
        kind, size = k % 6, 20 + (k * 37) % 160
        if kind == 0:
            f = _eth(None, 17, 53, size, k)
            want.append((sid(CONFIG, "dns"), f, f))
        elif kind == 1:
            f = _eth(None, 17, 80, size, k)
        elif kind == 2:
            f = _eth(100, 17, 80, size, k)
            if counts["v100_passed"] % 2 == 0:  # rate 2 over the frames its filter passes
                want.append((sid(CONFIG, "v100"), f[:100], f))
            counts["v100_passed"] += 1
        elif kind == 3:
            f = _eth(100, 6, 80, size, k)
        elif kind == 4:
            f = _eth(200, 17, 53, size, k)
        else:
            f = b"\xff" * 6 + bytes.fromhex("020000000001") + b"\x88\xb5" + bytes(range(50))
        frames.append(f)
    assert len(want) == 20 + 10 and any(len(w[2]) > 100 for w in want if w[0] == sid(CONFIG, "v100"))
    fpath = tmp_path / "frames.bin"
    fpath.write_bytes(b"".join(struct.pack("<I", len(f)) + f for f in frames))
    ring = tmp_path / "embedded.ring"  # not in the daemon's runtime_dir: only we read it
    p = subprocess.Popen([str(exe), str(daemon_cr.sock), "mrcr0", str(ring), str(fpath)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line or line == "done\n":
                break
            out.append(line)
        assert out and out[-1].startswith(("counters", "rule_counters")), (out, p.stderr.read())
        kv = {}
        for line in out:
            if line.startswith(("counters", "rule_counters")):
                f = dict(x.split("=", 1) for x in line.split()[1:])
                kv[(line.split()[0], f.get("vid"))] = {k: int(v) for k, v in f.items()}
        c = kv[("counters", None)]
        assert (c["seen"], c["sampled"], c["pushed"], c["dropped_ring_full"], c["returned"]) == (120, 30, 30, 0, 30)
        # dns: 80 frames dispatched to the default rule (all but VID 100's 40), 20 pass
        assert {k: kv[("rule_counters", "0")][k] for k in ("session_id", "seen", "filtered", "sampled", "pushed")} \
            == {"session_id": sid(CONFIG, "dns"), "seen": 80, "filtered": 60, "sampled": 20, "pushed": 20}
        assert {k: kv[("rule_counters", "100")][k] for k in ("session_id", "seen", "filtered", "sampled", "pushed")} \
            == {"session_id": sid(CONFIG, "v100"), "seen": 40, "filtered": 20, "sampled": 10, "pushed": 10}
        assert c["filtered"] == 80

        with Consumer.open(ring) as cons:
            got = list(cons.records())
    finally:
        p.stdin.close()
        p.wait(10)
    assert p.returncode == 0 and not p.stderr.read()
    assert [(g.session_id, g.data.hex(), g.wire_len, g.ifindex) for g in got] == \
        [(s, d.hex(), len(w), 7) for s, d, w in want]
    assert [g.truncated for g in got] == [len(d) < len(w) for _, d, w in want]


# ---------------------------------------------------------------- a fake daemon


class FakeDaemon:
    """A control socket that answers every `config` request with the body it is given (raw
    msgpack bytes), one connection at a time, in a thread of its own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.body = b""
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(str(path))
        self.srv.listen(8)
        self.srv.settimeout(0.2)
        self.stop = threading.Event()
        self.requests: list[bytes] = []
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.srv.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(10)
                try:
                    while True:
                        head = conn.recv(4, socket.MSG_WAITALL)
                        if len(head) < 4:
                            break
                        self.requests.append(conn.recv(struct.unpack("!I", head)[0], socket.MSG_WAITALL))
                        conn.sendall(struct.pack("!I", len(self.body)) + self.body)
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        self.t.join(5)
        self.srv.close()


@pytest.fixture
def fake(tmp_path):
    f = FakeDaemon(tmp_path / "fake.sock")
    yield f
    f.close()


def reply(sessions, **config) -> bytes:
    cfg = {"instance": "feedface00000001", "generation": 4, "runtime_dir": "/run/mirrord", "sessions": sessions,
           **config}
    return msgpack.packb({"ok": True, "config": cfg}, use_bin_type=True)


def session(name="s", id=1, input=("eth1",), inputs=None, rate=1, run_length=0, max_packet_length=0,
            program=b"", **extra) -> dict:
    s = {"name": name, "id": id, "input": list(input), "rate": rate, "run_length": run_length,
         "max_packet_length": max_packet_length, "filter": "x" if program else "", "filter_program": program}
    if inputs is not None:
        s["inputs"] = [{"interface": i, "vlan": v, "name": n} for i, v, n in inputs]
    s.update(extra)
    return s


RET0 = struct.pack("=HBBI", 0x06, 0, 0, 0)          # ret #0
RET_ALL = struct.pack("=HBBI", 0x06, 0, 0, 262144)  # ret #262144
JA_OUT = struct.pack("=HBBI", 0x05, 0, 0, 100)      # ja +100: past the end


def _vlans(n: int, program: bytes = b"") -> list[dict]:
    return [session(name=f"v{v}", id=1000 + v, input=[f"eth1.{v}"], inputs=[("eth1", v, f"eth1.{v}")],
                    program=program) for v in range(1, n + 1)]


def _mp_ext_in_session() -> bytes:
    """A session map whose "note" is a msgpack ext (0xd4): a type the protocol never uses."""
    good = reply([session(note=None)])
    i = good.index(b"\xa4note\xc0")
    return good[:i] + b"\xa4note\xd4\x01\x02" + good[i + 6:]


HOSTILE = {
    "oversized program": (reply([session(program=RET0 * 4097)]),
                          '"sessions[0].filter_program" has 4097 instructions, at most 4096'),
    "program not whole instructions": (reply([session(program=RET0 + b"\0\0\0\0")]),
                                       '"sessions[0].filter_program" is 12 bytes, not a whole number'),
    "program bpf_validate refuses": (reply([session(), session(name="t", id=2, input=["eth2"],
                                                               program=JA_OUT + RET0)]),
                                     '"sessions[1].filter_program" is not a valid classic BPF program'),
    "program as a str": (msgpack.packb({"ok": True, "config": {"instance": "a", "generation": 1, "sessions": [
        session(program="abcdefgh")]}}, use_bin_type=True), '"sessions[0].filter_program" is a str, expected a bin'),
    "too many VLAN inputs": (reply(_vlans(65)), "more than 64 VLAN inputs on eth1"),
    "VID 4095": (reply([session(inputs=[("eth1", 4095, "eth1.4095")])]),
                 '"sessions[0].inputs[0].vlan" 4095 is not a VLAN ID (0 to 4094)'),
    "negative VID": (reply([session(inputs=[("eth1", 0, "eth1"), ("eth1", -1, "eth1.x")])]),
                     '"sessions[0].inputs[1].vlan" is -1, expected an int 0 or more'),
    "VID as a str": (reply([session(inputs=[("eth1", "100", "eth1.100")])]),
                     '"sessions[0].inputs[0].vlan" is a str, expected a int'),
    "inputs as a map": (reply([{**session(), "inputs": {"interface": "eth1"}}]),
                        '"sessions[0].inputs" is a map, expected a array'),
    "an input without a name": (reply([{**session(), "inputs": [{"interface": "eth1", "vlan": 3}]}]),
                                '"sessions[0].inputs[0]" needs "interface", "vlan" and "name"'),
    "input not a list": (reply([{**session(), "input": "eth1"}]),
                         '"sessions[0].input" is a str, expected a array'),
    "rate as a str": (reply([session(rate="7")]), '"sessions[0].rate" is a str, expected a int'),
    "id above 32 bits": (reply([session(id=1 << 33)]), '"sessions[0].id" 8589934592 is above'),
    "no run_length": (reply([{k: v for k, v in session().items() if k != "run_length"}]),
                      '"sessions[0].run_length" is missing'),
    "filter text a bin": (reply([session(filter=b"udp")]), '"sessions[0].filter" is a bin, expected a str'),
    "sessions a map": (msgpack.packb({"ok": True, "config": {"instance": "a", "generation": 1, "sessions": {}}}),
                       '"sessions" is a map, expected a array'),
    "no generation": (msgpack.packb({"ok": True, "config": {"instance": "a", "sessions": []}}),
                      'config has no "generation"'),
    "instance too long": (reply([], instance="i" * 100), '"instance" is 100 bytes, at most 63'),
    "filters over the table's bound": (reply(_vlans(5, program=RET_ALL * 4096)),
                                       '"filter_program": the rules for eth1 hold 20480 filter instructions, '
                                       'at most 16384 per table'),
    "one VID twice": (reply([session(inputs=[("eth1", 7, "eth1.7")]),
                             session(name="t", id=2, input=["x"], inputs=[("eth1", 7, "eth1.7b")])]),
                      "eth1 VLAN 7 is the input of two sessions (sessions[0] and sessions[1])"),
    "ext type": (_mp_ext_in_session(), "msgpack type 0xd4"),
    "sessions[] not a map": (reply([session(), 5]), '"sessions[1]" is a int, expected a map'),
}


@pytest.mark.parametrize("build", ["asan", "rust"])
@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_hostile_replies_are_refused_naming_the_field(case, build, request, fake):
    exe = request.getfixturevalue(f"exe_{build}")
    body, text = HOSTILE[case]
    fake.body = body
    r = subprocess.run([str(exe), str(fake.path), "eth1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr, f"rc={r.returncode}\n{r.stdout}\n{r.stderr}"  # no ASan report
    head, rules = _table(r.stdout)
    assert (head["rc"], head["untouched"]) == (str(-EPROTO), "1"), head
    assert text in head["err"], head["err"]
    assert "\n" not in head["err"] and rules == []
    # the reference forwarder refuses the same replies (a ValueError naming the field), but
    # for the ones only the tap's bounds or the wire format catch
    snap = msgpack.unpackb(body, raw=False, strict_map_key=False).get("config") if case != "ext type" else None
    if isinstance(snap, dict) and case not in ("too many VLAN inputs", "filters over the table's bound",
                                               "one VID twice", "instance too long", "no generation",
                                               "id above 32 bits"):
        with pytest.raises(ValueError):
            tables([("eth1", "q0")], snap)


def test_a_refusing_daemon_and_an_older_daemon(exe_asan, fake):
    fake.body = msgpack.packb({"ok": False, "error": "config: not now"})
    r = subprocess.run([str(exe_asan), str(fake.path), "eth1"], capture_output=True, text=True, timeout=60)
    head, _ = _table(r.stdout)
    assert (head["rc"], head["untouched"], head["err"]) == ("-121", "1", "config: not now")
    # a daemon from before VLAN inputs: no "inputs", no filter: the plain "input" decides
    old = [{k: v for k, v in session(id=9, rate=3, input=["eth0", "eth1"]).items()
            if k not in ("filter", "filter_program")}]
    fake.body = reply(old)
    head, rules = _ask(exe_asan, fake.path, "eth1")
    assert head["rc"] == "0" and rules == [(0, 9, 3, 0, 0, b"", 0)] == _py(msgpack.unpackb(fake.body)["config"], "eth1")
    assert fake.requests and all(q == msgpack.packb({"op": "config"}) for q in fake.requests)


def test_random_replies_agree_with_the_reference_forwarder(exe_asan, fake):
    """Differential: 60 seeded random configs (parents, VLAN inputs, labels, filters, older
    daemons without "inputs"), three ingresses each: the C table equals tables()'s."""
    rnd = random.Random(1717)
    progs = [b"", compile_filter("udp"), compile_filter("vlan 100"), compile_filter("tcp port 80")]
    ifaces = ["eth1", "eth2", "eth1.100", "bond0"]
    runs = 0
    for _ in range(60):
        sessions, used = [], set()
        for n in range(rnd.randint(0, 5)):
            ins = []
            for _ in range(rnd.randint(1, 3)):
                # eth1.100 also as an interface of its own (VLAN 0): then its default rule is
                # that session's, not the VLAN input labelled eth1.100 (key before label)
                i, v = rnd.choice(ifaces), rnd.choice([0, 0, 100, 200, 4094])
                if (i, v) not in used:
                    used.add((i, v))
                    ins.append((i, v, f"{i}.{v}" if v else i))
            if not ins:
                continue
            s = session(name=f"s{n}", id=rnd.randint(0, 2**32 - 1), input=[x[2] for x in ins],
                        inputs=ins if rnd.random() < 0.8 or any(v for _, v, _ in ins) else None,
                        rate=rnd.randint(0, 100), run_length=rnd.randint(0, 20),
                        max_packet_length=rnd.choice([0, 64, 9216]), program=rnd.choice(progs),
                        extra={"nested": [{"a": [1, 2.5, None]}]},
                        when_listened=rnd.choice([True, False, None, 1, "yes", [True]]))
            sessions.append(s)
        fake.body = reply(sessions, generation=rnd.randint(1, 2**40))
        snap = msgpack.unpackb(fake.body)["config"]
        for ingress in ("eth1", "eth1.100", "bond0"):
            head, rules = _ask(exe_asan, fake.path, ingress)
            assert head["rc"] == "0", head
            assert rules == _py(snap, ingress), (ingress, sessions)
            assert (int(head["generation"]), head["instance"]) == (snap["generation"], snap["instance"])
            runs += 1
    assert runs == 180
