"""Vertex AI custom training: what its environment says, parsed (trainer/environment.py reads it).

Vertex AI runs the same image as Kubernetes does and tells each replica two
things through environment variables:

* Where to write, when the CustomJob has a `baseOutputDirectory`
  (https://cloud.google.com/vertex-ai/docs/reference/rest/v1/CustomJobSpec,
  field baseOutputDirectory; for a hyperparameter-tuning trial the three sit
  under `<base>/<trial_id>/` instead):

    AIP_MODEL_DIR           = <base>/model/        the SavedModel, for model import
    AIP_CHECKPOINT_DIR      = <base>/checkpoints/
    AIP_TENSORBOARD_LOG_DIR = <base>/logs/         what Vertex AI TensorBoard streams
                                                   (docs: /vertex-ai/docs/experiments/tensorboard-training)

* Which replica this is, as CLUSTER_SPEC and, for TensorFlow, TF_CONFIG
  (https://cloud.google.com/vertex-ai/docs/training/distributed-training).
  Worker pool i of `workerPoolSpecs[]` is `workerpool<i>` in CLUSTER_SPEC and
  a TensorFlow task type in TF_CONFIG:

    workerPoolSpecs[0]  workerpool0  chief      the primary replica (replicaCount 1)
    workerPoolSpecs[1]  workerpool1  worker
    workerPoolSpecs[2]  workerpool2  ps         parameter servers or a Reduction Server
    workerPoolSpecs[3]  workerpool3  evaluator  (not in TF_CONFIG's cluster, only its task)

  CLUSTER_SPEC looks like
  `{"cluster": {"workerpool0": ["cmle-training-workerpool0-ab-0:2222"], "workerpool1": [...]},
    "environment": "cloud", "task": {"type": "workerpool0", "index": 0, "trial": "..."}}`;
  TF_CONFIG has the same shape with TensorFlow's task types, plus a `job` key
  holding the CustomJobSpec. Keys other than `cluster` and `task` are ignored.

This trainer runs MultiWorkerMirroredStrategy: every replica is a worker
that holds all the variables, so pools 2 and 3 have nothing to run here and
are refused with a message saying so. Nothing here reads the process environment: callers
pass the environment (trainer/environment.py is the one place that reads it).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Mapping, Optional

from trainer import environment
from trainer import errors


# CLUSTER_SPEC's pool names -> TF_CONFIG's task types (distributed-training page).
POOL_TASK_TYPES = {"workerpool0": "chief", "workerpool1": "worker",
                   "workerpool2": "ps", "workerpool3": "evaluator"}
# What a refused pool is for, and what to do instead.
UNSUPPORTED_POOLS = {
    "workerpool2": "workerPoolSpecs[2] (parameter servers or a Reduction Server)",
    "workerpool3": "workerPoolSpecs[3] (an evaluator)",
}
_REMEDY = ("this trainer runs MultiWorkerMirroredStrategy, where every replica trains: use "
           "workerPoolSpecs[0] (the chief, replicaCount 1) and workerPoolSpecs[1] (the other "
           "workers) only, as vertex/custom-job-multi-worker.yaml does")


@dataclasses.dataclass(frozen=True)
class Outputs:
  """Vertex AI's output directories; a field is None when its variable is not set."""
  base_dir: str                  # the parent of AIP_MODEL_DIR: config.json, metrics.json, export/
  model_dir: Optional[str]       # saved_model.pb at its root, for `gcloud ai models upload`
  checkpoint_dir: Optional[str]
  tensorboard_dir: Optional[str]


def outputs(env: Mapping[str, str]) -> Optional[Outputs]:
  """The AIP_* output directories, or None when Vertex AI set none (not on Vertex AI).

  Raises:
    ConfigError: a directory has no parent to hold the job's own files.
  """
  values = {name: env.get(name, "").strip() or None
            for name in (environment.AIP_MODEL_DIR, environment.AIP_CHECKPOINT_DIR,
                         environment.AIP_TENSORBOARD_LOG_DIR)}
  first = next(((name, v) for name, v in values.items() if v), None)
  if first is None:
    return None
  name, value = first
  parent = value.rstrip("/").rpartition("/")[0]
  if not parent or parent.endswith(":/") or parent == "gs:":
    raise errors.ConfigError(
        f"{name}={value!r} has no parent directory for config.json and metrics.json: set the "
        "CustomJob's baseOutputDirectory to a folder (gs://BUCKET/PATH), or pass --job-dir.")
  return Outputs(base_dir=parent, model_dir=_strip(values[environment.AIP_MODEL_DIR]),
                 checkpoint_dir=_strip(values[environment.AIP_CHECKPOINT_DIR]),
                 tensorboard_dir=_strip(values[environment.AIP_TENSORBOARD_LOG_DIR]))


def _strip(path: Optional[str]) -> Optional[str]:
  # Vertex AI's values end in '/'; storage.join and os.path.join add their own.
  return path.rstrip("/") if path else None


def tf_config_from_cluster_spec(raw: str) -> dict:
  """TF_CONFIG's `cluster` and `task` for a CLUSTER_SPEC (when Vertex AI set no TF_CONFIG).

  Addresses are checked later, with the rest of the cluster
  (resolver._parse_tf_config).

  Raises:
    ClusterError: CLUSTER_SPEC is not JSON of the documented shape, or names
      a pool this trainer cannot run.
  """
  def bad(why: str) -> errors.ClusterError:
    return errors.ClusterError(f"malformed {environment.CLUSTER_SPEC} (Vertex AI): {why}")

  try:
    spec = json.loads(raw)
  except json.JSONDecodeError as e:
    raise bad(f"not JSON ({e})") from None
  cluster = spec.get("cluster") if isinstance(spec, dict) else None
  task = spec.get("task") if isinstance(spec, dict) else None
  if not isinstance(cluster, dict) or not isinstance(task, dict):
    raise bad('expected {"cluster": {"workerpool0": [...], ...}, "task": {"type": '
              '"workerpool0", "index": 0}}')
  unknown = sorted(set(cluster) - set(POOL_TASK_TYPES))
  if unknown:
    raise bad(f"unknown worker pools {unknown}: Vertex AI names them workerpool0 to workerpool3")
  if not isinstance(task.get("type"), str):
    raise bad(f"task.type {task.get('type')!r} must be a pool name such as \"workerpool0\"")
  refuse_pools(sorted(set(cluster) | {task.get("type")}), environment.CLUSTER_SPEC)
  if task.get("type") not in cluster:
    raise bad(f"task.type {task.get('type')!r} is not one of the cluster's pools {sorted(cluster)}")
  return {"cluster": {POOL_TASK_TYPES[pool]: addresses for pool, addresses in cluster.items()},
          "task": {"type": POOL_TASK_TYPES[task["type"]], "index": task.get("index", 0)}}


def refuse_pools(names: list, source: str) -> None:
  """Raises ClusterError if `names` (pools or TensorFlow task types) include ps or evaluator pools.

  Args:
    names: CLUSTER_SPEC pool names or TF_CONFIG task types, of the cluster and this task.
    source: the variable they came from, for the message.
  """
  by_task_type = {POOL_TASK_TYPES[pool]: pool for pool in UNSUPPORTED_POOLS}
  pools = sorted({by_task_type.get(n, n) for n in names} & set(UNSUPPORTED_POOLS))
  if pools:
    raise errors.ClusterError(
        f"{source} has {' and '.join(UNSUPPORTED_POOLS[p] for p in pools)}: {_REMEDY}.")
