"""What the chief writes about a run: config.json at the start, metrics.json at the end.

Both are plain JSON in the job directory (trainer/storage/jobdir.py), for people and
for tools: config.json holds every flag and what it resolved to on this
cluster, metrics.json the final evaluation and where the export went.
metrics.json is written last, so its presence with an `export` entry means
the run finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Optional

import keras
import numpy as np
import tensorflow as tf

from trainer.config import TrainConfig
from trainer.data.pipeline import DatasetInfo


@dataclasses.dataclass(frozen=True)
class TrainedBy:
  """Who trained: for the records (trainer/cluster/resolver.py's Cluster is where a
  process sits in the cluster)."""
  workers: int
  replicas: int
  strategy: str
  source: str


def who_trained(workers: int, replicas: int, strategy: str, source: str,
                recorded_config: Optional[dict] = None) -> TrainedBy:
  """Who trained: this run's cluster, or, for a chief that finishes a trained
  multi-worker run alone, the training's, from its config.json (`recorded_config`)."""
  trained = (recorded_config or {}).get("resolved", {})
  return TrainedBy(workers=trained.get("workers", workers),
                   replicas=trained.get("replicas", replicas),
                   strategy=trained.get("strategy", strategy),
                   source=trained.get("cluster_source", source))


def weights_fingerprint(model: keras.Model) -> str:
  """sha256 of the weights (16 hex digits): equal on every worker when replicas stayed in sync."""
  digest = hashlib.sha256()
  for weights in model.get_weights():
    digest.update(np.ascontiguousarray(weights).tobytes())
  return digest.hexdigest()[:16]


def config_record(config: TrainConfig, job_dir: str, cluster: TrainedBy, xla: bool,
                  steps_per_epoch: int, info: DatasetInfo, compute_precision: str,
                  precision_reason: str, onednn: bool) -> dict[str, Any]:
  """config.json: the flags, plus what they resolved to.

  `compute_precision` (float32, bfloat16 or float16) and `precision_reason`:
  --mixed-precision resolved for this machine, and why. `onednn`: whether
  TensorFlow's CPU kernels were oneDNN's (trainer/environment.py's prefer_onednn).
  """
  return {
      **dataclasses.asdict(config),
      "resolved": {
          "job_dir": job_dir,
          "model_name": config.resolved_model_name(),
          "effective_learning_rate": config.effective_learning_rate(),
          "replicas": cluster.replicas,
          "per_replica_batch": config.batch_size // cluster.replicas,
          "workers": cluster.workers,
          "strategy": cluster.strategy,
          "xla": xla,
          "compute_precision": compute_precision,
          "compute_precision_reason": precision_reason,
          "onednn": onednn,
          "cluster_source": cluster.source,
          "steps_per_epoch": steps_per_epoch,
          "image_shape": list(info.image_shape),
          "class_names": list(info.class_names),
          "tensorflow": tf.__version__,
          "keras": keras.__version__,
      },
  }


def final_metrics(config: TrainConfig, info: DatasetInfo, results: dict[str, Any],
                  global_step: int, wall_seconds: float, train_images_per_sec: Optional[float],
                  cluster: TrainedBy) -> dict[str, Any]:
  """metrics.json without its `export` entry (added once the export is published).

  Args:
    results: the final evaluation (trainer/training/metrics.py's sums: loss,
      accuracy, count, confusion).
    train_images_per_sec: steady-state training throughput, None if no step
      was timed (e.g. a rerun that only exported).
  """
  confusion = np.asarray(results["confusion"])
  per_class = {name: (float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else None)
               for i, name in enumerate(info.class_names)}
  return {
      "dataset": config.dataset,
      "model_name": config.resolved_model_name(),
      "epochs": config.epochs,
      "global_step": global_step,
      "test_loss": results["loss"],
      "test_accuracy": results["accuracy"],
      "test_examples": results["count"],
      "per_class_accuracy": per_class,
      "wall_time_s": wall_seconds,
      "train_images_per_sec": train_images_per_sec,
      "workers": cluster.workers,
      "replicas": cluster.replicas,
  }
