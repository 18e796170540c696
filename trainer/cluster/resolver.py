"""Which worker this process is: the cluster, read from the environment and checked.

* `TF_CONFIG` set (Kubeflow TFJob, Vertex AI, by hand), or else Vertex AI's
  `CLUSTER_SPEC` (trainer/cluster/vertex.py): its chief and workers.
* A JobSet's pod (`TRAINER_JOBSET_NAME` set, overlays/jobset): TF_CONFIG is
  derived from the host names the JobSet controller gives its pods,
  `<jobset>-<replicatedJob>-<jobIndex>-<podIndex>.<subdomain>:<port>`
  (trainer/cluster/kubernetes.py).
* A Kubernetes Indexed Job (`JOB_COMPLETION_INDEX` and `TRAINER_NUM_WORKERS`
  set): TF_CONFIG is derived from the pod's index and the headless Service's
  stable pod DNS names, `<job>-<index>.<service>:<port>` (trainer/cluster/kubernetes.py).
* Otherwise one machine.

Workers are numbered as MultiWorkerMirroredStrategy numbers them: a `chief`
task, if any, is worker 0 and the chief; otherwise worker 0 is the chief.
A cluster of one task is one machine: there is nobody to talk to.

Where to write is the job directory (--job-dir) or, on Vertex AI without
--job-dir, the AIP_* directories (`vertex_outputs`). Parsing only: nothing
here loads TensorFlow or starts anything (trainer/cluster/distribution.py does).
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Mapping, Optional

from trainer import environment
from trainer import errors
from trainer.cluster import kubernetes
from trainer.cluster import vertex

_ADDRESS_RE = re.compile(r"^\[?[A-Za-z0-9.\-_:]+\]?:\d{1,5}$")


@dataclasses.dataclass(frozen=True)
class Cluster:
  """This process's place in the training cluster."""
  num_workers: int
  worker_index: int
  is_chief: bool
  tf_config: Optional[dict]  # None on a single machine
  source: str  # where the description came from, for the log

  @property
  def is_multi_worker(self) -> bool:
    return self.tf_config is not None

  @classmethod
  def single_machine(cls, source: str) -> "Cluster":
    """One process that is the whole cluster: worker 0, the chief, nobody to talk to."""
    return cls(num_workers=1, worker_index=0, is_chief=True, tf_config=None, source=source)


def cluster_from_env(env: Optional[Mapping[str, str]] = None) -> Cluster:
  """Reads the cluster from TF_CONFIG, a JobSet's or an Indexed Job's environment.

  Only parses and checks; starts nothing. For an Indexed Job the derived
  TF_CONFIG is returned in `Cluster.tf_config`; `distribution.create_strategy` exports it.

  Raises:
    ClusterError: TF_CONFIG, the JobSet's or the Indexed Job's variables are malformed.
  """
  env = environment.read() if env is None else env
  if env.get(environment.TF_CONFIG, "").strip():
    return _parse_tf_config(env[environment.TF_CONFIG], "TF_CONFIG")
  if env.get(environment.CLUSTER_SPEC, "").strip():
    return _parse_tf_config(json.dumps(vertex.tf_config_from_cluster_spec(
        env[environment.CLUSTER_SPEC])), "Vertex AI CLUSTER_SPEC")
  if environment.TRAINER_JOBSET_NAME in env:
    return _parse_tf_config(json.dumps(kubernetes.jobset_tf_config(env)),
                            "JobSet (jobset.sigs.k8s.io pod labels, JOB_COMPLETION_INDEX)")
  indexed = environment.JOB_COMPLETION_INDEX in env
  counted = environment.TRAINER_NUM_WORKERS in env
  if indexed and counted:
    return _parse_tf_config(json.dumps(kubernetes.indexed_job_tf_config(env)),
                            "Kubernetes Indexed Job (JOB_COMPLETION_INDEX)")
  # Half an Indexed Job's variables: each pod would train alone, as its own
  # chief, on the same job directory (and the lock lets pods of one Job take
  # it over from each other). A lone index 0, or a count of 1, is one machine.
  if (indexed and env[environment.JOB_COMPLETION_INDEX].strip() != "0") or (
      counted and env[environment.TRAINER_NUM_WORKERS].strip() != "1"):
    have, lack = ((environment.JOB_COMPLETION_INDEX, environment.TRAINER_NUM_WORKERS) if indexed
                  else (environment.TRAINER_NUM_WORKERS, environment.JOB_COMPLETION_INDEX))
    raise errors.ClusterError(
        f"{have}={env[have]!r} is set but {lack} is not: an Indexed Job's pods need both (the "
        "Job's completionMode: Indexed sets JOB_COMPLETION_INDEX; k8s/job.yaml sets "
        "TRAINER_NUM_WORKERS to its completions). Without them every pod would train alone.")
  return Cluster.single_machine("single machine (no TF_CONFIG, no JOB_COMPLETION_INDEX)")


def _parse_tf_config(raw: str, source: str) -> Cluster:
  def bad(why: str) -> errors.ClusterError:
    return errors.ClusterError(f"malformed TF_CONFIG ({source}): {why}")

  try:
    tf_config = json.loads(raw)
  except json.JSONDecodeError as e:
    raise bad(f"not JSON ({e})") from None
  if not isinstance(tf_config, dict):
    raise bad("expected a JSON object with 'cluster' and 'task'")
  cluster, task = tf_config.get("cluster"), tf_config.get("task")
  if not isinstance(cluster, dict) or not cluster:
    raise bad("'cluster' must map task types to address lists, e.g. "
              '{"worker": ["host0:2222", "host1:2222"]}')
  if not isinstance(task, dict):
    raise bad("'task' must be an object like {\"type\": \"worker\", \"index\": 0}")
  unsupported = sorted(set(cluster) - {"chief", "worker"})
  if unsupported:
    raise bad(f"task types {unsupported} are not supported: MultiWorkerMirroredStrategy "
              "uses 'chief' and 'worker' only (no parameter servers or evaluators)")
  for kind, addresses in cluster.items():
    if not isinstance(addresses, list) or not addresses:
      raise bad(f"cluster.{kind} must be a non-empty list of host:port strings")
    for address in addresses:
      if not isinstance(address, str) or not _ADDRESS_RE.match(address):
        raise bad(f"cluster.{kind} has {address!r}, which is not host:port")
      if not 1 <= int(address.rsplit(":", 1)[1]) <= 65535:
        raise bad(f"cluster.{kind} has {address!r}, whose port is not in 1-65535")
  if len(cluster.get("chief", [])) > 1:
    raise bad("there can be at most one chief")
  kind, index = task.get("type"), task.get("index", 0)
  if not isinstance(kind, str):
    raise bad(f"task.type {kind!r} must be a string such as \"worker\"")
  if isinstance(index, bool) or not isinstance(index, int):  # JSON true would pass as 1
    raise bad(f"task.index {index!r} must be an integer such as 0")
  # Vertex AI's evaluator pool is a task type outside the cluster (vertex.py).
  vertex.refuse_pools([kind], source)
  if kind not in cluster:
    raise bad(f"task.type {kind!r} is not one of the cluster's task types {sorted(cluster)}")
  if not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
    raise bad(f"task.index {index!r} is out of range for {len(cluster[kind])} {kind} task(s)")

  chiefs = len(cluster.get("chief", []))
  worker_index = index if kind == "chief" else chiefs + index
  if chiefs + len(cluster.get("worker", [])) == 1:
    # E.g. a Vertex AI job with one replica: MirroredStrategy over its GPUs,
    # not collectives with nobody.
    return Cluster.single_machine(f"{source}, one task: single machine")
  return Cluster(
      num_workers=chiefs + len(cluster.get("worker", [])),
      worker_index=worker_index,
      is_chief=worker_index == 0,
      tf_config={"cluster": cluster, "task": {"type": kind, "index": index}},
      source=source)


def vertex_outputs(env: Optional[Mapping[str, str]] = None) -> Optional[vertex.Outputs]:
  """Vertex AI's AIP_* output directories; None when not on Vertex AI.

  Raises:
    ConfigError: an AIP_* directory has no parent for the job's own files.
  """
  return vertex.outputs(environment.read() if env is None else env)


def chief_address(cluster: Cluster) -> Optional[str]:
  """host:port of the chief (the `chief` task, else worker 0); None on one machine."""
  if not cluster.is_multi_worker:
    return None
  spec = cluster.tf_config["cluster"]
  return (spec.get("chief") or spec["worker"])[0]
