"""Before any step: which version to evaluate, and whether the data fit it and stable.

Everything here reads storage only (the base path's versions, each version's
run info); a failure says nothing was changed. `resolve` turns --candidate
(N, latest, next) into a published version, waiting for `next`; `check_fit`
refuses data that a version's own export says it was not trained on.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Iterator, Optional

from serving.client.errors import first_line
from serving.rollout import served_config
from serving.rollout.errors import StepFailed, UsageError


@contextlib.contextmanager
def reading(what: str) -> Iterator[None]:
  """Storage read before any step: its failure is one line, and says nothing was changed.

  A rerun may get past GCS or the network being unreachable (StepFailed, exit
  4); not past a permission, a missing bucket or a malformed file (UsageError,
  exit 2).
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from trainer import errors as trainer_errors  # pylint: disable=import-outside-toplevel
  try:
    yield
  except (trainer_errors.UserError, json.JSONDecodeError, tf.errors.NotFoundError,
          tf.errors.PermissionDeniedError, tf.errors.UnauthenticatedError,
          tf.errors.InvalidArgumentError, PermissionError, FileNotFoundError) as e:
    raise UsageError(f"{what} failed ({type(e).__name__}: {first_line(e)}); nothing was "
                     "changed") from e
  except (trainer_errors.TransientError, tf.errors.OpError, OSError) as e:
    raise StepFailed(f"{what} failed ({type(e).__name__}: {first_line(e)}); nothing was changed: "
                     "run it again") from e


def published(base_path: str) -> list[int]:
  """Complete versions under the base path: saved_model.pb is what publishing writes last."""
  from trainer.storage import api  # pylint: disable=import-outside-toplevel
  with reading(f"listing the versions under {base_path}"):
    return [v for v in api.list_versions(base_path)
            if api.exists(api.join(base_path, str(v), "saved_model.pb"))]


def resolve(candidate, view: served_config.ModelView, base_path: str, wait_s: float,
            poll_s: float, say) -> int:
  """--candidate's version: N if published complete, the newest complete one (latest), or the
  newest above every version models.config lists or labels, waited for up to `wait_s` (next)."""
  if isinstance(candidate, int):
    # TF Serving would take a listed version that is not there, or only half
    # there, and never load it; the step would fail with models.config changed.
    complete = published(base_path)
    if candidate not in complete:
      raise UsageError(
          f"--candidate {candidate}: version {candidate} is not published under {base_path} "
          f"(no {candidate}/saved_model.pb; complete versions: "
          f"{', '.join(map(str, complete)) or 'none'}): pass a published version, or "
          "--candidate latest or next")
    return candidate
  if candidate == "latest":
    complete = published(base_path)
    if not complete:
      raise UsageError(f"--candidate latest: no complete version under {base_path}")
    return complete[-1]
  above = max(view.versions + tuple(view.labels.values()), default=0)
  say(f"waiting up to {wait_s:g} s for a version above {above} under {base_path}")
  deadline = time.monotonic() + wait_s
  failing: Optional[StepFailed] = None
  while True:
    # The rollout Job waits here for hours: a listing that fails in a way a
    # rerun may get past (StepFailed) is said once and retried until the deadline.
    try:
      newer = [v for v in published(base_path) if v > above]
      if failing is not None:
        say(f"listing {base_path} works again")
      failing = None
    except StepFailed as e:
      if failing is None:
        say(f"{e}; still waiting")
      failing, newer = e, []
    if newer:
      return newer[-1]
    if time.monotonic() >= deadline:
      raise failing or StepFailed(f"--candidate next: no version above {above} was published "
                                  f"under {base_path} within --wait-s {wait_s:g} s")
    time.sleep(poll_s)


def check_fit(split, base_path: str, versions: dict) -> None:
  """Refuses (exit 2), before any step, data that a version's own export says it was not trained on.

  `versions`: a name for each (the candidate, stable) -> its version. Each
  version's export records the image shape and class names it was trained
  with (trainer.export, assets.extra/); a version without that file (not
  exported by this trainer) is checked only through the server, once canary
  names it, as every version also is.
  """
  from trainer.storage import api, versions as versions_lib  # pylint: disable=import-outside-toplevel
  for label, version in versions.items():
    path = api.join(base_path, str(version), versions_lib.RUN_INFO_PATH)
    with reading(f"reading {path}"):
      info = api.read_json(path)
    if not isinstance(info, dict):
      continue
    shape = tuple(info.get("image_shape") or ()) or None
    if shape is not None and shape != split.image_shape:
      raise UsageError(f"--data images are {split.image_shape}, but version {version} ({label}) "
                       f"was trained on {shape}: pass --image-size as training did")
    names = info.get("class_names")
    if names is not None and tuple(names) != split.class_names:
      raise UsageError(f"--data's class names {list(split.class_names)} are not version "
                       f"{version}'s ({label}) {list(names)}: evaluate on the data the model "
                       "was trained for")
