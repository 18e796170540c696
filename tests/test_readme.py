"""README.md opens with the two commands, CI runs them as a user would, every flag is documented,
and README stays a short front door whose links into docs/ all lead somewhere."""

import glob
import os
import re
import subprocess

from conftest import REPO
from trainer import config as config_lib


def _read(*path):
  with open(os.path.join(REPO, *path), encoding="utf-8") as f:
    return f.read()


README = _read("README.md")
FLAGS_DOC = _read("docs", "flags.md")  # the full flag reference
KUBERNETES_DOC = _read("docs", "kubernetes.md")
README_MAX_LINES = 260
# Files outside this repository that the text must not send a reader to.
OUTSIDE_FILES = ("shared/ENVIRONMENT", "shared/RULES")


def _pages() -> dict:
  """{path relative to the repository: text} for README.md and every docs/*.md."""
  pages = {"README.md": README}
  for path in sorted(glob.glob(os.path.join(REPO, "docs", "*.md"))):
    pages[os.path.relpath(path, REPO)] = _read(path)
  return pages


def _section(text: str, heading: str) -> str:
  """The text from `heading` (a whole line) to the next heading of the same level or above."""
  start = text.index(f"\n{heading}\n") + 1
  body = start + len(heading) + 1
  end = re.compile(r"^#{1,%d} " % len(heading.split(" ", 1)[0]), re.M).search(text, body)
  return text[start:end.start() if end else len(text)]


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


def test_every_flag_is_in_the_flag_reference():
  for field in config_lib.fields():
    assert f"`--{field.name.replace('_', '-')}" in FLAGS_DOC, field.name


def test_the_readme_names_only_real_flags():
  """README's table of the main flags is a selection: every flag it names must exist."""
  flags = {f"--{field.name.replace('_', '-')}" for field in config_lib.fields()}
  flags |= {"--preset", "--no-augment", "--help"}
  named = set(re.findall(r"`(--[a-z][a-z0-9-]*)", _section(README, "## Presets and the main flags")))
  assert named and named <= flags, named - flags


def _flag_table_defaults(text: str) -> dict:
  """{flag: its default cell} of the `| flag | default | meaning |` tables' rows.

  A row of two flags has a cell each ("`--train-split` / `--eval-split` | `train` / `test`"),
  or one, the first's ("`--augment` / `--no-augment` | off").
  """
  table = {}
  for flags_cell, default_cell in re.findall(r"^\| (`--[^|]*) \| ([^|]*) \|", text, re.M):
    flags = re.findall(r"`(--[a-z][a-z0-9-]*)`", flags_cell)
    cells = [c.strip() for c in default_cell.split(" / ")]
    table.update(zip(flags, cells) if len(cells) == len(flags) else [(flags[0], default_cell.strip())])
  return table


def _as_value(cell: str, default):
  """What a default cell says, in the type of the config's default; None if it describes one in words."""
  if cell == "unset":
    return None, True
  if default is None:
    return None, False  # unset, described by what it means: `runs/MODEL_NAME`, "dataset name"
  if isinstance(default, bool):
    return {"off": False, "on": True}.get(cell), cell in ("off", "on")
  literal = re.fullmatch(r"`([^`]+)`|(-?[\d.]+(?:e-?\d+)?)", cell)
  if not literal:
    return None, False  # words, not a value
  text = literal.group(1) or literal.group(2)
  if isinstance(default, (int, float)) and not isinstance(default, bool):
    try:
      return type(default)(float(text)) if isinstance(default, int) else float(text), True
    except ValueError:
      return None, False
  return text, True


def test_every_documented_default_is_the_configs():
  """README's table of the main flags and docs/flags.md state each default the code has."""
  defaults = {f"--{f.name.replace('_', '-')}": f.default for f in config_lib.fields()}
  checked = 0
  for page, text in (("README.md", _section(README, "## Presets and the main flags")),
                     ("docs/flags.md", FLAGS_DOC)):
    for flag, cell in _flag_table_defaults(text).items():
      if flag not in defaults:
        continue  # --preset: not a field
      value, literal = _as_value(cell, defaults[flag])
      if literal:
        checked += 1
        assert value == defaults[flag], f"{page}: {flag} documented as {cell}, the config's is {defaults[flag]!r}"
  assert checked >= 20, checked  # the tables were read


def test_every_rerun_recipe_deletes_the_old_pods_first():
  """A background delete lets the old pods drain beside the new ones (docs/kubernetes.md, "Running again")."""
  recipe = "kubectl delete job cnn-trainer --cascade=foreground && kubectl apply -f k8s/job.yaml"
  manifest = _read("k8s", "job.yaml")
  assert recipe in KUBERNETES_DOC and recipe in manifest
  for name, text in [*_pages().items(), ("k8s/job.yaml", manifest)]:
    for line in re.findall(r"kubectl delete job [^\n`]*", text):
      assert "--cascade=foreground" in line, f"{name}: {line}"


def test_every_exit_code_is_in_the_readme_table():
  from trainer import errors  # pylint: disable=import-outside-toplevel
  table = _section(README, "## Exit codes")
  codes = {int(c) for c in re.findall(r"^\| (\d+) \|", table, re.M)}
  assert codes == {v for k, v in vars(errors).items() if k.startswith("EXIT_")}


def test_the_readme_is_a_front_door():
  lines = README.count("\n") + (not README.endswith("\n"))
  assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move detail into docs/"


def test_every_docs_page_is_in_the_readme_map():
  docs_map = _section(README, "## Documentation")
  for path in _pages():
    if path != "README.md":
      assert f"]({path})" in docs_map, f"{path} is not linked from README's ## Documentation"


def _without_code(text: str) -> str:
  """Markdown with fenced code blocks and inline code removed: links and headings only count in prose."""
  text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
  return re.sub(r"`[^`\n]*`", "", text)


def _anchor(heading: str) -> str:
  """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(text: str) -> set:
  return {_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", _without_code(text), re.M)}


def test_every_relative_link_leads_to_a_file_and_heading_that_exist():
  pages = _pages()
  for name, text in pages.items():
    for target in re.findall(r"\]\(([^)\s]+)\)", _without_code(text)):
      if re.match(r"[a-z]+:", target):  # https:, mailto:
        continue
      path, _, fragment = target.partition("#")
      resolved = os.path.normpath(os.path.join(os.path.dirname(name), path)) if path else name
      assert os.path.exists(os.path.join(REPO, resolved)), f"{name}: ({target}) leads nowhere"
      if fragment and resolved.endswith(".md"):
        anchors = _anchors(pages.get(resolved) or _read(resolved))
        assert fragment in anchors, f"{name}: ({target}): no such heading in {resolved}"


def test_no_page_cites_a_file_outside_the_repository():
  for name, text in _pages().items():
    for outside in OUTSIDE_FILES:
      assert outside not in text, f"{name} cites {outside}: cite the upstream source instead"
