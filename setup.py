# The C parts are built by cffi's setuptools hook; everything else is in pyproject.toml.
# Two modules: mirrord._ring (the ring, libc only) and mirrord._xdp (the forwarder, libxdp
# and libbpf), so that the daemon installs and runs where libxdp does not.
from setuptools import setup

setup(cffi_modules=["native/build_ring.py:ffibuilder", "native/build_xdp.py:ffibuilder"])
