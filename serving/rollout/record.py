"""The evaluation record: one JSON file per decision, beside the published versions.

Written to RECORDS (default: the model's base path + /evaluations, e.g.
gs://BUCKET/models/cifar10/evaluations/), never inside a version directory:
TF Serving loads only integer-named directories under the base path
(file_system_storage_path_source.cc), so it never looks at `evaluations/`,
and the trainer's sweep of leftovers skips it too (trainer/storage/versions.py).
Locally a temporary file then a rename; on gs:// one upload.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import re
from typing import Any, Optional

from serving.rollout.errors import UsageError

SCHEMA = "cnn-trainer/rollout-record/v1"
FOLDER = "evaluations"


def tool_version() -> str:
  try:
    return f"cnn-trainer {importlib.metadata.version('cnn-trainer')}"
  except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
    return "cnn-trainer (not installed)"


def default_dir(base_path: str) -> str:
  return base_path.rstrip("/") + "/" + FOLDER


def build(action: str, model: str, decision: str, *, candidate: Optional[int],
          baseline: Optional[int], data: Optional[dict] = None, figures: Optional[dict] = None,
          rule: Optional[dict] = None, significance: Optional[float] = None,
          max_p99_ms: Optional[float] = None, message: str = "", server: str = "",
          config: str = "", now: Optional[datetime.datetime] = None) -> dict[str, Any]:
  now = now or datetime.datetime.now(datetime.timezone.utc)
  return {"schema": SCHEMA, "time": now.isoformat(timespec="seconds"), "tool": tool_version(),
          "action": action, "model": model, "candidate": candidate, "baseline": baseline,
          "decision": decision, "message": message, "data": data, "figures": figures,
          "test": {"name": "exact McNemar (binomial on the discordant pairs)",
                   "significance": significance, "max_p99_ms": max_p99_ms,
                   **({"p_two_sided": figures["mcnemar_exact"]["p_two_sided"],
                       "p_candidate_worse": figures["mcnemar_exact"]["p_candidate_worse"]}
                      if figures else {})},
          "rule": rule, "server": server, "config": config}


def write(directory: str, record: dict) -> str:
  """Writes `record` as DIRECTORY/<time>-<model>-v<candidate>-<decision>.json; returns the path."""
  from trainer.storage import api  # pylint: disable=import-outside-toplevel
  stamp = re.sub(r"[^0-9T]", "", record["time"].split("+")[0])
  name = f"{stamp}Z-{record['model']}-v{record['candidate']}-{record['decision']}.json"
  if not api.is_gcs(directory):
    os.makedirs(directory, exist_ok=True)
  path = api.join(directory, name)
  api.write_json(path, record)
  return path


def previous_stable(directory: str, model: str, stable: int) -> Optional[int]:
  """The baseline of the newest `promoted` record of `model` that made `stable` stable, if any.

  The file name (write's format, exactly) only picks the files to read: the
  record's own fields decide, since one model's name may end in another's
  (tiny-cifar10's records end in '-cifar10-v2-promoted.json' too).
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  if not tf.io.gfile.isdir(directory):
    return None
  named = re.compile(rf"[0-9]+T[0-9]+Z-{re.escape(model)}-v{stable}-promoted\.json")
  for name in sorted(tf.io.gfile.listdir(directory), reverse=True):
    if not named.fullmatch(name):
      continue
    path = directory.rstrip("/") + "/" + name
    with tf.io.gfile.GFile(path) as f:
      try:
        record = json.load(f)
      except json.JSONDecodeError as e:
        raise UsageError(f"{path} is not a JSON record ({e}): repair or move it, or pass --to N; "
                         "nothing was changed") from e
    if not (isinstance(record, dict) and record.get("model") == model
            and record.get("candidate") == stable and record.get("decision") == "promoted"):
      continue
    baseline = record.get("baseline")
    if baseline is not None:
      if type(baseline) is not int:  # pylint: disable=unidiomatic-typecheck  # not bool
        raise UsageError(f"{path}: its baseline {baseline!r} is not a version: repair or move "
                         "it, or pass --to N; nothing was changed")
      return baseline
  return None
