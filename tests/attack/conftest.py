"""Reproducers written by an outside tester: each test shows a way mirrord's fixes for
issues 12 and 13 can still be broken (or that an attack held).  Root only; everything runs
in namespaces and temporary paths the test makes, and is removed after."""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[0]))            # tests/: frames, pktio, daemon_proc
sys.path.insert(0, str(HERE.parents[0] / "linux"))  # tests/linux: the Lab of test_forward
