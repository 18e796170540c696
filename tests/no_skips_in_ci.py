"""A pytest plugin: under CI=true, a skipped test is a failed test.

Some tests need what a developer's machine may lack (root and iproute2 for
network namespaces). Locally they skip and say why; in CI a skip would hide
that nothing tested the path (exit 129, exit 143, resume, the manifest), so
there it fails the run. xfail is unaffected.
"""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
  return os.environ.get("CI", "").lower() == "true"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
  del item, call
  outcome = yield
  report = outcome.get_result()
  if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    report.outcome = "failed"
    report.longrepr = (f"skipped under CI=true, where every test must run: {reason}. "
                       "Install what the test needs in .ci/run.")
