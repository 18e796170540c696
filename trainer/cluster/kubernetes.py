"""TF_CONFIG from a Kubernetes pod's identity: an Indexed Job's or a JobSet's.

Kubernetes gives each worker pod a stable index and host name, and the
manifests pass both into the environment (k8s/job.yaml, overlays/jobset);
these functions turn them into the TF_CONFIG that
trainer/cluster/resolver.py parses, as trainer/cluster/vertex.py does for
Vertex AI's CLUSTER_SPEC. They only parse and check.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional

from trainer import environment
from trainer import errors

DEFAULT_PORT = 2222


def _integer(env: Mapping[str, str], name: str, low: int, high: Optional[int] = None) -> int:
  raw = env.get(name, "")
  try:
    value = int(raw)
  except ValueError:
    raise errors.ClusterError(f"{name}={raw!r} is not an integer: fix the Job manifest's env.") from None
  if value < low:
    raise errors.ClusterError(f"{name}={value} must be >= {low}: fix the Job manifest's env.")
  if high is not None and value > high:
    raise errors.ClusterError(f"{name}={value} must be <= {high}: fix the Job manifest's env.")
  return value


def _workers_and_index(env: Mapping[str, str]) -> tuple[int, int, int]:
  """(workers, this pod's index, port) of an Indexed Job, JobSet's or plain."""
  num_workers = _integer(env, environment.TRAINER_NUM_WORKERS, 1)
  index = _integer(env, environment.JOB_COMPLETION_INDEX, 0)
  port = (_integer(env, environment.TRAINER_PORT, 1, 65535) if env.get(environment.TRAINER_PORT)
          else DEFAULT_PORT)
  if index >= num_workers:
    raise errors.ClusterError(
        f"{environment.JOB_COMPLETION_INDEX}={index} but "
        f"{environment.TRAINER_NUM_WORKERS}={num_workers}: the Job's completions and "
        f"{environment.TRAINER_NUM_WORKERS} must be equal.")
  return num_workers, index, port


# A DNS label (RFC 1123), what every part of a pod's host name must be.
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

# The pod labels JobSet puts on every pod it creates (kubernetes-sigs/jobset,
# pkg/controllers/jobset_controller.go, labelAndAnnotateObject, v0.12.0); it
# sets no environment variables, so overlays/jobset passes these through the
# downward API.
JOBSET_LABELS = {
    environment.TRAINER_JOBSET_NAME: "jobset.sigs.k8s.io/jobset-name",
    environment.TRAINER_REPLICATED_JOB: "jobset.sigs.k8s.io/replicatedjob-name",
    environment.TRAINER_JOB_INDEX: "jobset.sigs.k8s.io/job-index",
}


def jobset_tf_config(env: Mapping[str, str]) -> dict:
  """TF_CONFIG for pod `JOB_COMPLETION_INDEX` of a JobSet's one Job of N workers.

  With `network.enableDNSHostnames`, JobSet names each child Job
  `<jobset>-<replicatedJob>-<jobIndex>` (pkg/util/placement, GenJobName), the
  Indexed Job gives its pods the host names `<job>-<podIndex>`, and JobSet sets
  their subdomain and creates the headless Service of that name, which
  defaults to the JobSet's name (jobset_controller.go, constructJob and
  GetSubdomain; api/jobset/v1alpha2/jobset_types.go, Network). So worker i is
  `<jobset>-<replicatedJob>-<jobIndex>-<i>.<subdomain>`, stable across pod
  replacements and JobSet restarts. `TRAINER_SERVICE` names the subdomain
  where the JobSet sets `network.subdomain`; unset, it is the JobSet's name.

  Every worker is one pod of the same Job (replicas: 1): a second Job of the
  replicatedJob would train a second cluster into the same job directory.

  Raises:
    ClusterError: a variable is missing, malformed or out of range.
  """
  for name, label in JOBSET_LABELS.items():
    value = env.get(name, "")
    if not value:
      raise errors.ClusterError(
          f"{name} is empty: the pod has no label {label}. Is it a JobSet's pod? Set {name} "
          f"from metadata.labels['{label}'] (see overlays/jobset/from-job/kustomization.yaml).")
  jobset_name = env[environment.TRAINER_JOBSET_NAME]
  replicated_job = env[environment.TRAINER_REPLICATED_JOB]
  subdomain = env.get(environment.TRAINER_SERVICE) or jobset_name
  for name, value in ((environment.TRAINER_JOBSET_NAME, jobset_name),
                      (environment.TRAINER_REPLICATED_JOB, replicated_job),
                      (environment.TRAINER_SERVICE, subdomain)):
    if not _DNS_LABEL_RE.match(value):
      raise errors.ClusterError(f"{name}={value!r} is not a DNS label, so no pod host name can "
                                "contain it: fix the JobSet manifest's env.")
  job_index = _integer(env, environment.TRAINER_JOB_INDEX, 0)
  if job_index != 0:
    raise errors.ClusterError(
        f"{environment.TRAINER_JOB_INDEX}={job_index}: the trainer runs as one Job of N workers, "
        "so the JobSet's replicatedJob must have replicas: 1 and parallelism = completions = "
        f"{environment.TRAINER_NUM_WORKERS}.")
  num_workers, index, port = _workers_and_index(env)
  prefix = f"{jobset_name}-{replicated_job}-{job_index}"
  return {
      "cluster": {"worker": [f"{prefix}-{i}.{subdomain}:{port}" for i in range(num_workers)]},
      "task": {"type": "worker", "index": index},
  }


def indexed_job_tf_config(env: Mapping[str, str]) -> dict:
  """TF_CONFIG for pod `JOB_COMPLETION_INDEX` of an Indexed Job.

  Pods of an Indexed Job with `subdomain: <service>` and a headless Service
  of that name resolve as `<job>-<index>.<service>`, stable across restarts.

  Raises:
    ClusterError: a variable is missing or out of range.
  """
  num_workers, index, port = _workers_and_index(env)
  missing = [n for n in (environment.TRAINER_JOB_NAME, environment.TRAINER_SERVICE)
             if not env.get(n)]
  if missing:
    raise errors.ClusterError(
        f"{', '.join(missing)} not set: an Indexed Job needs the Job name and the headless "
        "Service name to address its workers (see k8s/job.yaml).")
  job, service = env[environment.TRAINER_JOB_NAME], env[environment.TRAINER_SERVICE]
  return {
      "cluster": {"worker": [f"{job}-{i}.{service}:{port}" for i in range(num_workers)]},
      "task": {"type": "worker", "index": index},
  }
