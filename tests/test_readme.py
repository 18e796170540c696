"""README.md opens with the two commands, CI runs them as a user would, and every flag is documented."""

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


def _ci_commands():
  """The two command lines .ci/run runs, as it prints them in its print-only mode."""
  result = subprocess.run(["bash", os.path.join(REPO, ".ci", "run")], capture_output=True, text=True,
                          env={**os.environ, "CI_PRINT_COMMANDS": "1"}, timeout=60, check=True)
  user_path, test_command = result.stdout.splitlines()
  return user_path, test_command


def test_ci_runs_exactly_the_readme_test_command():
  assert _ci_commands()[1] == _code_blocks()[1]


def test_ci_installs_as_the_readme_train_command_does_with_no_extras():
  """CI's user path: README command 1 up to the download, then the offline job."""
  train_cmd = _code_blocks()[0]
  user_path = _ci_commands()[0]
  install, rest = train_cmd.split(" && python -m trainer.task", 1)
  assert install == "python3 -m venv .venv && . .venv/bin/activate && pip install ."
  assert user_path == f"{install} && bash .ci/user-path"


def test_every_flag_is_in_the_readme():
  for field in config_lib.fields():
    assert f"`--{field.name.replace('_', '-')}" in README, field.name


def test_every_rerun_recipe_deletes_the_old_pods_first():
  """A background delete lets the old pods drain beside the new ones (README, "Running on Kubernetes")."""
  recipe = "kubectl delete job cnn-trainer --cascade=foreground && kubectl apply -f k8s/job.yaml"
  manifest = open(os.path.join(REPO, "k8s", "job.yaml"), encoding="utf-8").read()
  assert recipe in README and recipe in manifest
  for name, text in (("README.md", README), ("k8s/job.yaml", manifest)):
    for line in re.findall(r"kubectl delete job [^\n`]*", text):
      assert "--cascade=foreground" in line, f"{name}: {line}"


def test_every_exit_code_is_in_the_readme_table():
  from trainer import errors  # pylint: disable=import-outside-toplevel
  table = README[README.index("## Exit codes"):README.index("## Layout")]
  codes = {int(c) for c in re.findall(r"^\| (\d+) \|", table, re.M)}
  assert codes == {v for k, v in vars(errors).items() if k.startswith("EXIT_")}
