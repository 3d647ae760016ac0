"""The two compiled modules: mirrord._ring (ring, drain, guard; libc only) and mirrord._xdp (the
forwarder; libxdp, libbpf).  The daemon's side must install and run where _xdp cannot load."""
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import mirrord._ring
import mirrord._xdp
import mirrord.ring

ROOT = Path(__file__).resolve().parents[2]

# A process in which `import mirrord._xdp` fails as it would without libxdp.so on the machine,
# that imports the daemon and what it is built of, moves frames through a named ring (so the
# SIGBUS guard of mirrord._ring is armed) into an output, and says which modules it loaded.
DAEMON_WITHOUT_XDP = textwrap.dedent("""
    import importlib, importlib.abc, importlib.util, os, socket, sys

    class NoXdp(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "mirrord._xdp":
                raise ImportError("libxdp.so.1: cannot open shared object file (blocked by the test)")
            return None

    sys.meta_path.insert(0, NoXdp())

    def have(name):
        try:
            return importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            return False

    # the daemon package once it lands (issue 14), the module it grew out of until then
    daemon = "mirrord.daemon" if have("mirrord.daemon") else "mirrord.runtime"
    loaded = [daemon, "mirrord.ring", "mirrord.config", "mirrord.sinks", "mirrord.sinks.tap",
              "mirrord.sinks.interface"]
    loaded += [m for m in ("mirrord.control", "mirrord.daemon.control", "mirrord.protocol",
                           "mirrord.http", "mirrord.daemon.http", "mirrord.metrics",
                           "mirrord.daemon.metrics") if have(m)]
    for m in loaded:
        importlib.import_module(m)

    # the block is real: the forwarder's binding does not import here
    try:
        import mirrord._xdp
    except ImportError:
        pass
    else:
        raise SystemExit("mirrord._xdp imported despite the block")

    from mirrord.ring import DRAIN_WRITE, Consumer, Producer, Routes

    frames = [bytes([i]) * (60 + i) for i in range(50)]
    path = os.path.join(sys.argv[1], "no-xdp.ring")
    out, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with Producer(path, data_size=1 << 16, name="no-xdp") as p, Consumer.open(path) as c:
        assert all(p.push(f, session_id=7) for f in frames)
        routes = Routes([(7, out.fileno(), DRAIN_WRITE)])
        assert c.drain_routes(routes, budget=1024) == len(frames)
        got = [peer.recv(65536) for _ in frames]
        assert got == frames, "frames differ"
        st = routes.stats(0)
        assert (st.packets, st.bytes) == (len(frames), sum(map(len, frames))), st
        k = c.counters()
        assert (k.pushed_packets, k.consumed_packets) == (len(frames), len(frames)), k
    print("daemon", daemon)
    print("imported", " ".join(loaded))
    print("xdp_loaded", "mirrord._xdp" in sys.modules)
""")


def test_the_daemon_side_runs_where_the_forwarder_module_cannot_load(tmp_path):
    r = subprocess.run([sys.executable, "-c", DAEMON_WITHOUT_XDP, str(tmp_path)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    assert lines["xdp_loaded"] == "False", r.stdout
    assert lines["daemon"] in ("mirrord.daemon", "mirrord.runtime")
    assert "mirrord.ring" in lines["imported"].split()


def _ldd(path: str) -> str:
    ldd = shutil.which("ldd")
    if ldd is None:
        pytest.skip("no ldd")
    return subprocess.run([ldd, path], capture_output=True, text=True, check=True).stdout


def test_the_ring_module_links_neither_libxdp_nor_libbpf():
    ring = _ldd(mirrord._ring.__file__)
    assert "libc.so" in ring, ring
    assert "libxdp" not in ring and "libbpf" not in ring, ring
    # the same check on the forwarder's module finds them: it can fail
    xdp = _ldd(mirrord._xdp.__file__)
    assert "libxdp" in xdp and "libbpf" in xdp, xdp


@pytest.mark.parametrize("module", [mirrord._ring, mirrord._xdp], ids=["_ring", "_xdp"])
def test_each_module_exports_only_its_init(module):
    """Built -fvisibility=hidden: the copy of ring.c/guard.c inside _xdp and the one inside _ring
    can never interpose on each other (native/build_xdp.py says why that matters)."""
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("no nm")
    out = subprocess.run([nm, "-D", "--defined-only", module.__file__], capture_output=True,
                         text=True, check=True).stdout
    names = {line.split()[-1] for line in out.splitlines() if line.strip()}
    assert names == {"PyInit_" + module.__name__.rsplit(".", 1)[1]}, names


def test_both_modules_speak_the_ring_abi_of_the_binding():
    assert mirrord._ring.lib.MR_RING_ABI_VERSION == mirrord.ring.ABI_VERSION
    assert mirrord._xdp.lib.MR_RING_ABI_VERSION == mirrord.ring.ABI_VERSION


def test_the_config_bound_on_copy_length_is_the_ring_s_default_frame():
    from mirrord.config import MAX_PACKET_LENGTH

    assert MAX_PACKET_LENGTH == mirrord._ring.lib.MR_FRAME_DEFAULT == mirrord.ring.DEFAULT_MAX_FRAME
    code = [line.split("#")[0] for line in (ROOT / "mirrord/config.py").read_text().splitlines()]
    assert not [line for line in code if "9216" in line], "9216 copied by hand into config.py"
