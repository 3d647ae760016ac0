"""Shared test policy.

Tests marked ``root`` need root (network namespaces, TAP/TUN, AF_XDP).  Without it they
skip with the reason, except under ``CI=true``, where such a skip is a failure: CI runs
as root on a machine that has every feature, so a skip there hides a broken test.
"""
import os

import pytest
from hypothesis import settings

pytest_plugins = ["fixtures.netns", "fixtures.capture", "fixtures.daemon", "fixtures.sessions",
                  "fixtures.collector", "fixtures.libmirrord"]

# CI must not be flaky: the same examples on every run there (explore freely elsewhere)
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (
        report.skipped
        and os.environ.get("CI") == "true"
        and item.get_closest_marker("root") is not None
    ):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"root test skipped under CI=true: {reason}"


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces, TAP/TUN, AF_XDP)")
    for item in items:
        if item.get_closest_marker("root") is not None:
            item.add_marker(skip)
