"""libmirrord's ABI: the library `make lib` builds exports exactly the symbols its version
script (native/libmirrord.map) lists, under the soname libmirrord.so.0, and each of them is
declared in a header `make install-lib` installs.  An accidental export (a helper that lost
its `static`) or a removal fails here, before a forwarder linked against the old library
does."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAP = ROOT / "native" / "libmirrord.map"

pytestmark = pytest.mark.skipif(not (ROOT / "Makefile").exists() or shutil.which("nm") is None,
                                reason="needs the source tree (Makefile) and binutils")


def map_symbols() -> set[str]:
    """The names in the map's global: section, as the link uses it (without mr_client__
    while native/src/client.c does not exist, as the Makefile does)."""
    text = re.sub(r"/\*.*?\*/", "", MAP.read_text(), flags=re.S)
    # every version node's global: section (up to its local: or the node's end)
    names = set()
    for part in text.split("global:")[1:]:
        glob = part.split("local:", 1)[0].split("}", 1)[0]
        names |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*;", glob))
    if not (ROOT / "native" / "src" / "client.c").exists():
        names = {n for n in names if not n.startswith("mr_client__")}
    return names


@pytest.fixture(scope="module")
def libdir(libmirrord_dir) -> Path:
    return libmirrord_dir


def test_exports_equal_the_version_script(libdir):
    wanted = map_symbols()
    assert any(n.startswith("mr_tap__") for n in wanted)
    nm = subprocess.run(["nm", "-D", "--defined-only", str(libdir / "libmirrord.so.0")], capture_output=True,
                        text=True, check=True).stdout
    exported = set()
    for line in nm.splitlines():
        addr, kind, name = line.split()
        if kind == "A":  # the version node itself (LIBMIRRORD_0)
            continue
        exported.add(name.split("@")[0])
    assert exported == wanted, (f"exported but not in the map: {sorted(exported - wanted)}; "
                                f"in the map but not exported: {sorted(wanted - exported)}")


def test_soname_and_files(libdir):
    dyn = subprocess.run(["readelf", "-d", str(libdir / "libmirrord.so.0")], capture_output=True, text=True,
                         check=True).stdout
    assert re.findall(r"SONAME\)\s+Library soname: \[(.*?)\]", dyn) == ["libmirrord.so.0"]
    assert (libdir / "libmirrord.so").resolve() == (libdir / "libmirrord.so.0").resolve()
    pc = (libdir / "mirrord.pc").read_text()
    assert "Cflags: -I${includedir}" in pc and "Libs: -L${libdir} -lmirrord" in pc
    ar = subprocess.run(["ar", "t", str(libdir / "libmirrord.a")], capture_output=True, text=True,
                        check=True).stdout.split()
    assert "tap.o" in ar and "ring.o" in ar


def test_every_export_is_declared_in_an_installed_header():
    headers = "".join((ROOT / "native" / "include" / "mirrord" / h).read_text()
                      for h in ("tap.h", "ring.h", "client.h")
                      if (ROOT / "native" / "include" / "mirrord" / h).exists())
    missing = sorted(n for n in map_symbols() if not re.search(rf"\b{n}\s*\(", headers))
    assert not missing, f"exported without a declaration in an installed header: {missing}"


def test_marked_exports_equal_the_version_script():
    """MR_EXPORT in the sources and the map say the same thing: a function marked but not
    listed would be hidden by `local: *` without a word, one listed but not marked is
    caught above."""
    marked = set()
    for src in ("tap.c", "ring.c", "guard.c", "client.c"):
        path = ROOT / "native" / "src" / src
        if path.exists():
            marked |= set(re.findall(r"^MR_EXPORT\s[^(]*?\b(mr_\w+)\s*\(", path.read_text(), flags=re.M))
    assert marked == map_symbols(), (f"marked but not in the map: {sorted(marked - map_symbols())}; "
                                     f"in the map but not marked: {sorted(map_symbols() - marked)}")
