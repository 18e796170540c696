"""Under CI=true a skipped test fails the run; elsewhere it skips and says why."""

import os
import subprocess
import sys

import pytest

from conftest import REPO

_TESTS = '''
import pytest

def test_runs():
  pass

@pytest.mark.skipif(True, reason="needs a tool this machine lacks")
def test_needs_a_tool():
  pass

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_known_bug():
  assert False
'''


def _pytest(tmp_path, ci):
  (tmp_path / "test_sample.py").write_text(_TESTS)
  # Without PYTEST_ADDOPTS: the options a user gives the suite (plugins from their
  # own path, -n) are not this sample run's, which is given all it needs.
  env = {**{k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"},
         "PYTHONPATH": os.path.join(REPO, "tests"), "CI": ci}
  return subprocess.run(
      [sys.executable, "-m", "pytest", "-p", "no_skips_in_ci", "-p", "no:cacheprovider", "-q",
       "-rA", str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_a_skip_fails_the_run_under_ci(tmp_path):
  result = _pytest(tmp_path, "true")
  assert result.returncode == 1, result.stdout
  assert "1 passed, 1 xfailed, 1 error" in result.stdout  # a skip at set-up is an error
  assert "skipped under CI=true, where every test must run: needs a tool this machine lacks" in result.stdout


@pytest.mark.parametrize("ci", ["", "false"])
def test_a_skip_is_a_skip_elsewhere(tmp_path, ci):
  result = _pytest(tmp_path, ci)
  assert result.returncode == 0, result.stdout
  assert "1 passed, 1 skipped, 1 xfailed" in result.stdout
