"""models.config, the file TF Serving polls: read it, change one thing, write it whole.

TF Serving re-reads --model_config_file every --model_config_file_poll_wait_seconds
and applies labels first, then the versions to load (server_core.cc,
ReloadConfig); it refuses a config that MOVES a label to a version that is not
AVAILABLE, and keeps the old one. So every edit here is one step, made only
when the server already reports what the step needs, and the file is always
written whole and atomically: locally a temporary sibling then a rename, on
gs:// one object upload (trainer.storage.api.write_text). TF Serving never
reads half a file.

The tool manages a model whose version policy is `specific` (what
serving/models.config ships): with `latest` or `all` the bucket, not the
file, decides what is loaded, and listing a version would mean nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Protocol

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.rollout.errors import StepFailed, UsageError

STABLE, CANARY = "stable", "canary"


@dataclasses.dataclass(frozen=True)
class ModelView:
  """What models.config says of one model."""
  name: str
  base_path: str
  versions: tuple[int, ...]  # the `specific` versions listed, ascending
  labels: dict[str, int]


def parse(text: str, where: str = "models.config") -> model_server_config_pb2.ModelServerConfig:
  config = model_server_config_pb2.ModelServerConfig()
  try:
    text_format.Parse(text, config)
  except text_format.ParseError as e:
    raise UsageError(f"{where} is not a ModelServerConfig text proto ({e})") from e
  return config


def _model(config: model_server_config_pb2.ModelServerConfig, name: str, where: str):
  found = [m for m in config.model_config_list.config if m.name == name]
  if not found:
    names = ", ".join(m.name for m in config.model_config_list.config) or "none"
    raise UsageError(f"{where} has no model {name!r} (it lists: {names})")
  model = found[0]
  policy = model.model_version_policy.WhichOneof("policy_choice") or "latest"
  if policy != "specific":
    raise UsageError(f"model {name!r} in {where} has the {policy!r} version policy: the rollout "
                     "manages `specific` versions only (serving/models.config), where the file, "
                     "not the bucket, decides what loads")
  return model


def view(config: model_server_config_pb2.ModelServerConfig, name: str,
         where: str = "models.config") -> ModelView:
  model = _model(config, name, where)
  return ModelView(name, model.base_path, tuple(sorted(set(model.model_version_policy.specific.versions))),
                   dict(model.version_labels))


def edited(config: model_server_config_pb2.ModelServerConfig, name: str, *,
           listed: Optional[tuple[int, ...]] = None,
           labels: Optional[dict[str, int]] = None) -> model_server_config_pb2.ModelServerConfig:
  """A copy of `config` with model `name`'s specific versions and/or labels replaced."""
  copy = model_server_config_pb2.ModelServerConfig()
  copy.CopyFrom(config)
  model = _model(copy, name, "models.config")
  if listed is not None:
    model.model_version_policy.specific.ClearField("versions")
    model.model_version_policy.specific.versions.extend(sorted(set(listed)))
  if labels is not None:
    model.ClearField("version_labels")
    for label, version in sorted(labels.items()):
      model.version_labels[label] = version
  return copy


def header(text: str) -> str:
  """The leading comment block of a models.config, kept across the tool's rewrites."""
  lines = []
  for line in text.splitlines():
    if line.strip() and not line.lstrip().startswith("#"):
      break
    lines.append(line)
  return "\n".join(lines).rstrip() + "\n" if any(l.strip() for l in lines) else ""


def render(config: model_server_config_pb2.ModelServerConfig, previous_text: str) -> str:
  return header(previous_text) + text_format.MessageToString(config)


class ConfigStore(Protocol):
  """Where models.config lives: read whole, written whole and atomically."""

  def describe(self) -> str: ...

  def read(self) -> str: ...

  def write(self, text: str) -> None: ...


class ConfigFile:
  """models.config on a local path or gs:// (through trainer.storage.api)."""

  def __init__(self, path: str):
    self.path = path

  def describe(self) -> str:
    return self.path

  def read(self) -> str:
    from trainer.storage import api  # pylint: disable=import-outside-toplevel
    try:
      text = api.read_text(self.path)
    except Exception as e:  # pylint: disable=broad-except  # tf.errors, OSError, GCS errors
      raise UsageError(f"--config {self.path} cannot be read ({type(e).__name__}: {e})") from e
    if text is None:
      raise UsageError(f"--config {self.path} does not exist: give the models.config TF Serving "
                       "polls (its --model_config_file)")
    return text

  def write(self, text: str) -> None:
    from trainer.storage import api  # pylint: disable=import-outside-toplevel
    try:
      api.write_text(self.path, text)
    except Exception as e:  # pylint: disable=broad-except
      raise StepFailed(f"writing {self.path} failed ({type(e).__name__}: {e})") from e
