# The C parts are built by cffi's setuptools hook; everything else is in pyproject.toml.
from setuptools import setup

setup(cffi_modules=["native/build_ring.py:ffibuilder"])
