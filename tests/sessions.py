"""Session snippets and small helpers shared by the daemon tests."""
import subprocess

from mirrord.config import loads

S1 = """
[[session]]
name = "s1"
input = ["eth1"]
output = { type = "tap", name = "mirror0" }
"""
S2 = """
[[session]]
name = "s2"
input = ["eth2"]
output = { type = "tap", name = "mirror1" }
"""
TUN = """
[[session]]
name = "l3"
input = ["eth2"]
output = { type = "tun", name = "mtun0" }
"""
VETH = """
[[session]]
name = "ids"
input = ["eth3"]
output = { type = "interface", name = "mout0" }
"""


def sid(text, name):
    return loads(text).session(name).id


def make_veth(out="mout0", peer="mcap0"):
    """The `interface` output of VETH (and its peer), up, in the current namespace."""
    subprocess.run(["ip", "link", "add", out, "type", "veth", "peer", "name", peer], check=True)
    for dev in (out, peer):
        subprocess.run(["ip", "link", "set", dev, "addrgenmode", "none", "up"], check=True)
