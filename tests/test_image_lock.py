"""The image's lock files: what setup.py asks for, pinned with hashes, and nothing missing.

requirements/lock writes requirements/image-{gpu,cpu}.lock from setup.py; the
Dockerfile installs one of them with --require-hashes --no-deps, then `pip check`.
These tests fail as soon as setup.py and a lock disagree, so a dependency change
that forgot to rerun requirements/lock does not reach a build.
"""

import ast
import importlib.metadata
import os
import re

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO

LOCKS = {"gpu": ("gpu", "profile"), "cpu": ("profile",)}  # VARIANT -> setup.py extras


def _setup_requirements(extras) -> list[Requirement]:
  """install_requires and the given extras, read from setup.py's source (nothing runs)."""
  tree = ast.parse(open(os.path.join(REPO, "setup.py"), encoding="utf-8").read())
  constants = {node.targets[0].id: node.value.value for node in tree.body
               if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)}
  call = next(node for node in ast.walk(tree)
              if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup")
  kwargs = {k.arg: k.value for k in call.keywords}
  value = lambda n: n.value if isinstance(n, ast.Constant) else constants[n.id]
  requires = [value(n) for n in kwargs["install_requires"].elts]
  extras_map = {value(k): [value(e) for e in v.elts]
                for k, v in zip(kwargs["extras_require"].keys, kwargs["extras_require"].values)}
  for extra in extras:
    requires += extras_map[extra]
  return [Requirement(r) for r in requires]


def _lock(variant: str) -> dict:
  """name -> {"version", "hashes"} from requirements/image-VARIANT.lock."""
  text = open(os.path.join(REPO, "requirements", f"image-{variant}.lock"), encoding="utf-8").read()
  pins = {}
  for block in re.split(r"\n(?=[A-Za-z0-9])", text):
    first = block.splitlines()[0]
    if first.startswith("#"):
      continue
    found = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+) \\", first)
    assert found, f"image-{variant}.lock: {first!r} is not an exact pin"
    name = canonicalize_name(found.group(1))
    assert name not in pins, f"image-{variant}.lock pins {name} twice"
    pins[name] = {"version": found.group(2),
                  "hashes": re.findall(r"--hash=sha256:([0-9a-f]{64})", block)}
  return pins


@pytest.mark.parametrize("variant", sorted(LOCKS))
def test_every_requirement_of_setup_py_is_pinned_within_its_range(variant):
  pins = _lock(variant)
  for requirement in _setup_requirements(LOCKS[variant]):
    name = canonicalize_name(requirement.name)
    assert name in pins, f"setup.py asks for {requirement}, image-{variant}.lock lacks it: run requirements/lock"
    assert requirement.specifier.contains(pins[name]["version"], prereleases=True), (
        f"image-{variant}.lock pins {name}=={pins[name]['version']} outside setup.py's "
        f"{requirement}: run requirements/lock")


@pytest.mark.parametrize("variant", sorted(LOCKS))
def test_every_pin_carries_a_hash_and_names_the_command_that_wrote_it(variant):
  text = open(os.path.join(REPO, "requirements", f"image-{variant}.lock"), encoding="utf-8").read()
  assert "#    requirements/lock\n" in text
  pins = _lock(variant)
  assert len(pins) > 50
  assert [name for name, pin in pins.items() if not pin["hashes"]] == []


def test_the_gpu_lock_is_the_cpu_lock_plus_cuda():
  """Both images run the same versions; the GPU one only adds tensorflow[and-cuda]'s wheels."""
  gpu, cpu = _lock("gpu"), _lock("cpu")
  assert {n: p["version"] for n, p in cpu.items()} == {n: gpu[n]["version"] for n in cpu}
  added = set(gpu) - set(cpu)
  assert "nvidia-cudnn-cu12" in added and "nvidia-nccl-cu12" in added
  assert all(name.startswith("nvidia-") for name in added), sorted(added)


@pytest.mark.parametrize("variant", sorted(LOCKS))
def test_the_lock_is_closed_under_the_dependencies_of_what_it_pins(variant):
  """Each pinned package that this Python has installed at the same version: every
  dependency its metadata declares (for Python 3.11 on Linux) is pinned too, so the
  image's `pip install --no-deps` leaves nothing out (the image also runs `pip check`)."""
  pins = _lock(variant)
  environment = {**default_environment(), "python_version": "3.11", "sys_platform": "linux",
                 "platform_system": "Linux", "platform_machine": "x86_64", "extra": ""}
  checked = 0
  for name, pin in pins.items():
    try:
      dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
      continue
    if dist.version != pin["version"]:
      continue
    checked += 1
    for line in dist.requires or []:
      requirement = Requirement(line)
      if requirement.marker and not requirement.marker.evaluate(environment):
        continue
      assert canonicalize_name(requirement.name) in pins, (
          f"{name} {pin['version']} needs {requirement}, which image-{variant}.lock lacks: "
          "run requirements/lock")
  # Here, the day the locks were written: 90 of 100. A test environment installed later may hold
  # newer releases of some; the check covers those still at the locked version.
  assert checked >= 10


def test_the_dockerfile_installs_the_lock_by_hash_and_lets_the_runtime_pick_gpus():
  dockerfile = open(os.path.join(REPO, "Dockerfile"), encoding="utf-8").read()
  assert re.search(r"^ARG VARIANT=gpu$", dockerfile, re.M)
  assert "COPY requirements/image-${VARIANT}.lock " in dockerfile
  assert re.search(r"pip install [^\n]*--require-hashes --no-deps -r ", dockerfile)
  assert "pip check" in dockerfile
  # Every other pip install installs only this package, without dependencies.
  installs = re.findall(r"pip install ([^\n\\]*)", dockerfile)
  assert all("--no-deps" in args for args in installs), installs
  assert "NVIDIA_VISIBLE_DEVICES" not in re.sub(r"#.*", "", dockerfile)
  ignore = open(os.path.join(REPO, ".dockerignore"), encoding="utf-8").read().split()
  assert "!requirements/image-*.lock" in ignore
