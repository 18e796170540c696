"""README.md opens with the two commands, CI runs the second, and every flag is documented."""

import os
import re
import subprocess

from conftest import REPO
from trainer import config as config_lib

README = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()


def _code_blocks():
  return re.findall(r"```bash\n(.*?)\n```", README, re.S)


def test_readme_opens_with_train_and_test_commands():
  train_cmd, test_cmd = _code_blocks()[:2]
  assert README.index(train_cmd) < 600, "the train command must open the README"
  assert "pip install ." in train_cmd and "python -m trainer.task" in train_cmd
  assert 'pip install ".[test]"' in test_cmd and "python -m pytest tests" in test_cmd
  assert train_cmd.startswith("python3 -m venv") and test_cmd.startswith("python3 -m venv")


def test_ci_runs_exactly_the_readme_test_command():
  # The same extraction .ci/run performs.
  found = subprocess.run(["grep", "-m1", "-E", "^python3 -m venv .* pytest", "README.md"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.strip()
  assert found == _code_blocks()[1]
  assert "venv" in open(os.path.join(REPO, ".ci", "run")).read()


def test_every_flag_is_in_the_readme():
  for field in config_lib.fields():
    assert f"`--{field.name.replace('_', '-')}" in README, field.name
