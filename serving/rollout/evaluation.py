"""The held-out split through the server, by label, and the figures of the paired comparison.

Every batch goes to `canary` (the candidate) and to `stable` (the baseline),
so both answer on exactly the same images and the comparison is paired. The
order alternates from batch to batch, so neither label always runs on a
server warmed by the other's request. A batch is at most MAX_BATCH images:
TF Serving's max_batch_size (serving/batching_parameters.txt) refuses more
with INVALID_ARGUMENT.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from serving.rollout import stats

# serving/batching_parameters.txt's max_batch_size: a request of more images is refused.
MAX_BATCH = 64


@dataclasses.dataclass(frozen=True)
class LabelFigures:
  """One label's answers on the split."""
  label: str
  version: int
  correct: int
  total: int
  accuracy_ci95: tuple[float, float]  # Wilson
  per_class: dict[str, dict]  # class name -> {"correct", "total", "accuracy"}
  requests: int
  latency_p50_ms: float  # per request, as the tool saw it (network + batching + model)
  latency_p99_ms: float

  @property
  def accuracy(self) -> float:
    return self.correct / self.total if self.total else 0.0

  def to_json(self) -> dict:
    return {"label": self.label, "version": self.version, "correct": self.correct,
            "total": self.total, "accuracy": self.accuracy,
            "accuracy_ci95_wilson": list(self.accuracy_ci95), "per_class": self.per_class,
            "requests": self.requests, "latency_ms": {"p50": self.latency_p50_ms,
                                                      "p99": self.latency_p99_ms}}


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """The paired comparison of the candidate (canary) and the baseline (stable) on one split."""
  candidate: LabelFigures
  baseline: LabelFigures
  disagreements: int  # images the two classify differently (right or wrong)
  test: stats.McNemar

  def to_json(self) -> dict:
    return {"candidate": self.candidate.to_json(), "baseline": self.baseline.to_json(),
            "images": self.candidate.total, "disagreements": self.disagreements,
            "mcnemar_exact": {"baseline_right_candidate_wrong": self.test.baseline_only,
                              "candidate_right_baseline_wrong": self.test.candidate_only,
                              "discordant": self.test.discordant,
                              "p_two_sided": self.test.p_two_sided,
                              "p_candidate_worse": self.test.p_candidate_worse}}


def label_figures(label: str, version: int, labels: np.ndarray, predicted: np.ndarray,
                  class_names: Sequence[str], latencies_ms: Sequence[float]) -> LabelFigures:
  right = predicted == labels
  per_class = {}
  for k, name in enumerate(class_names):
    mask = labels == k
    total = int(mask.sum())
    correct = int(right[mask].sum())
    per_class[name] = {"correct": correct, "total": total,
                       "accuracy": correct / total if total else None}
  correct = int(right.sum())
  return LabelFigures(label, version, correct, len(labels), stats.wilson(correct, len(labels)),
                      per_class, len(latencies_ms), stats.percentile(latencies_ms, 50),
                      stats.percentile(latencies_ms, 99))


def compare(candidate: LabelFigures, baseline: LabelFigures, labels: np.ndarray,
            candidate_predicted: np.ndarray, baseline_predicted: np.ndarray) -> Evaluation:
  cand_right = candidate_predicted == labels
  base_right = baseline_predicted == labels
  test = stats.mcnemar(int((base_right & ~cand_right).sum()), int((cand_right & ~base_right).sum()))
  return Evaluation(candidate, baseline, int((candidate_predicted != baseline_predicted).sum()), test)


# (label, images) -> (the version that answered, or None if the transport does not say; classes)
Predict = Callable[[str, np.ndarray], tuple[Optional[int], np.ndarray]]


class LabelMoved(Exception):
  """A label answered with another version than the one it named when the evaluation began."""

  def __init__(self, label: str, expected: int, served: int):
    super().__init__(f"label {label!r} answered with version {served}, not {expected}: the labels "
                     "moved during the evaluation")
    self.label, self.expected, self.served = label, expected, served


def measure(predict: Predict, batches: Iterable[tuple[np.ndarray, np.ndarray]],
            expected: dict[str, int], class_names: Sequence[str],
            progress: Callable[[int], None] = lambda n: None,
            clock: Callable[[], float] = time.perf_counter) -> Evaluation:
  """Sends every batch to each label in `expected` (candidate label first in the dict), paired.

  Args:
    predict: one request; it raises what the client raises.
    batches: (uint8 images [n <= MAX_BATCH, H, W, C], int labels [n]).
    expected: label -> the version it must answer with, {canary: N, stable: M}.
    progress: called with the number of images done after each batch.

  Raises:
    LabelMoved: a response names another version than `expected` says (gRPC
      responses name theirs; REST ones do not, and the caller checks the
      labels before and after instead).
  """
  names = list(expected)
  truth, predicted = [], {label: [] for label in names}
  latencies = {label: [] for label in names}
  for i, (images, labels) in enumerate(batches):
    if len(images) > MAX_BATCH:
      raise ValueError(f"a batch of {len(images)} images: at most {MAX_BATCH} per request")
    for label in (names if i % 2 == 0 else names[::-1]):
      start = clock()
      served, classes = predict(label, images)
      latencies[label].append((clock() - start) * 1000.0)
      if served is not None and served != expected[label]:
        raise LabelMoved(label, expected[label], served)
      predicted[label].append(np.asarray(classes))
    truth.append(np.asarray(labels))
    progress(len(images))
  if not truth:
    raise ValueError("the split has no images")
  labels = np.concatenate(truth)
  results = {label: np.concatenate(predicted[label]) for label in names}
  candidate_label, baseline_label = names
  figures = {label: label_figures(label, expected[label], labels, results[label], class_names,
                                  latencies[label]) for label in names}
  return compare(figures[candidate_label], figures[baseline_label], labels,
                 results[candidate_label], results[baseline_label])
