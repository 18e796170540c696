"""Predictions for a batch of images, checked before anyone prints them.

Both transports decode a response into numpy arrays and hand them to
`check_outputs`, which holds every rule a prediction must meet. A response
that breaks one is the server's fault (MalformedResponse, exit code 3): the
client never prints a prediction it cannot vouch for.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional

import numpy as np

from serving.client.errors import MalformedResponse
from serving.client.metadata import OUTPUTS

# The most classes a prediction may have: ImageNet-21k has 21,841. It bounds
# what a response may make the client allocate (serving/client/tensors.py).
MAX_CLASSES = 100_000


@dataclasses.dataclass(frozen=True)
class Outputs:
  """A response's three outputs, checked: n predictions over k classes."""
  probabilities: np.ndarray  # float32 [n, k], finite
  classes: np.ndarray  # int64 [n], each in [0, k)
  class_names: list[list[str]]  # [n][k] valid Unicode; the name of class i at [i]


@dataclasses.dataclass
class PredictResult:
  """Predictions for a batch of images."""
  model: str
  version: Optional[int]  # as the server reported it (gRPC); None over REST
  signature: str
  probabilities: np.ndarray  # float32 [batch, classes]
  classes: np.ndarray  # int64 [batch]
  class_names: list[list[str]]  # [batch][classes]: the name of class i at [i]

  def top_k(self, k: int) -> list[list[tuple[str, float]]]:
    """Per image, the k most probable (class name, probability), best first."""
    k = min(k, self.probabilities.shape[1])
    order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
    return [[(self.class_names[i][j], float(self.probabilities[i, j])) for j in row]
            for i, row in enumerate(order)]


def check_outputs(outputs: Mapping[str, np.ndarray], count: Optional[int] = None) -> Outputs:
  """The outputs of a response, if they are what trainer.export's signatures return.

  Args:
    outputs: output name -> the decoded tensor (any dtype and shape).
    count: the number of images sent, which must be the number of predictions.

  Raises:
    MalformedResponse: an output is missing, of the wrong dtype or shape,
      ragged, NaN or infinite, a class index out of range, or a class name
      that is not valid Unicode.
  """
  missing = [name for name in OUTPUTS if name not in outputs]
  if missing:
    raise MalformedResponse(f"no {', '.join(missing)} output: this client serves models exported "
                            "by trainer.export")
  probabilities = outputs["probabilities"]
  if probabilities.dtype.kind not in "fiu" or probabilities.ndim != 2 or 0 in probabilities.shape:
    raise MalformedResponse(f"probabilities are {_describe(probabilities)}, not numbers "
                            "[batch, classes]")
  n, k = probabilities.shape
  if count is not None and n != count:
    raise MalformedResponse(f"{n} predictions for {count} images")
  if k > MAX_CLASSES:
    raise MalformedResponse(f"{k} classes, more than the {MAX_CLASSES} this client accepts")
  with np.errstate(over="ignore", invalid="ignore"):  # 1e300 becomes inf, caught next
    probabilities = probabilities.astype(np.float32)
  # NaN cannot be ranked, and --json would write it as a bare NaN token that
  # strict JSON readers refuse: a model that outputs it is broken.
  if not np.isfinite(probabilities).all():
    raise MalformedResponse("probabilities contain NaN or infinity: the model's output is not a "
                            "probability distribution")
  classes = outputs["classes"]
  if classes.dtype.kind not in "iu" or classes.shape != (n,):
    raise MalformedResponse(f"classes are {_describe(classes)}, not one integer per image "
                            f"[{n}]")
  if ((classes < 0) | (classes >= k)).any():
    raise MalformedResponse(f"a class index is outside [0, {k}) (classes: "
                            f"{classes[:8].tolist()}{'...' if n > 8 else ''})")
  names = outputs["class_names"]
  if names.shape != (n, k):
    raise MalformedResponse(f"class_names are {_describe(names)}, not [batch, classes] = [{n}, {k}]")
  return Outputs(probabilities, classes.astype(np.int64), [[_name(v) for v in row] for row in names])


def _name(value) -> str:
  """A class name as text: bytes must be UTF-8, text must be encodable as UTF-8."""
  if isinstance(value, bytes):
    try:
      return value.decode("utf-8")
    except UnicodeDecodeError as e:
      raise MalformedResponse(f"the class name {value[:40]!r} is not UTF-8 ({e.reason} at byte "
                              f"{e.start})") from e
  if isinstance(value, str):
    try:
      # JSON's "\ud800" decodes to a lone surrogate, which no output can encode.
      value.encode("utf-8")
    except UnicodeEncodeError as e:
      raise MalformedResponse(f"the class name {value[:40]!r} is not valid Unicode "
                              f"({e.reason})") from e
    return value
  raise MalformedResponse(f"class_names contain {type(value).__name__} {value!r:.40}, not strings")


def _describe(array: np.ndarray) -> str:
  kind = "strings" if array.dtype.kind in "OSU" else str(array.dtype)
  return f"{kind} {list(array.shape)}"
