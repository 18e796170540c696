"""Distribution: which strategy, which worker am I, where may I write.

Everything multi-worker lives here, decided from the environment:

* `TF_CONFIG` set (Kubeflow TFJob, Vertex AI, by hand), or else Vertex AI's
  `CLUSTER_SPEC` (trainer/cluster/vertex.py): `MultiWorkerMirroredStrategy` over its
  chief and workers.
* A JobSet's pod (`TRAINER_JOBSET_NAME` set, overlays/jobset): TF_CONFIG is
  derived from the host names the JobSet controller gives its pods,
  `<jobset>-<replicatedJob>-<jobIndex>-<podIndex>.<subdomain>:<port>`
  (trainer/cluster/kubernetes.py).
* A Kubernetes Indexed Job (`JOB_COMPLETION_INDEX` and `TRAINER_NUM_WORKERS`
  set): TF_CONFIG is derived from the pod's index and the headless Service's
  stable pod DNS names, `<job>-<index>.<service>:<port>` (trainer/cluster/kubernetes.py).
* Otherwise one machine: `MirroredStrategy` over two or more GPUs, else the
  default strategy (one GPU or the CPU).

Workers are numbered as MultiWorkerMirroredStrategy numbers them: a `chief`
task, if any, is worker 0 and the chief; otherwise worker 0 is the chief.
Only the chief writes to the job directory; other workers write what the
strategy needs (checkpoints) into a local temporary directory they delete.
A cluster of one task is one machine: there is nobody to talk to.

Where to write is the job directory (--job-dir) or, on Vertex AI without
--job-dir, the AIP_* directories (`vertex_outputs`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import shutil
import socket
import tempfile
import time
from typing import Callable, Iterator, Mapping, Optional

import tensorflow as tf

from trainer import environment
from trainer import errors
from trainer.cluster import kubernetes
from trainer.cluster import vertex

log = logging.getLogger(__name__)


_ADDRESS_RE = re.compile(r"^\[?[A-Za-z0-9.\-_:]+\]?:\d{1,5}$")

# Errors a collective raises when a peer worker has gone away. Only calls that
# run collectives (training steps, evaluation, the final barrier) map them to
# a lost peer: the same classes from a file write mean storage trouble
# (trainer/training/checkpoints.py).
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
               tf.errors.CancelledError, tf.errors.AbortedError)


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


def cluster_from_env(env: Optional[Mapping[str, str]] = None) -> Cluster:
  """Reads the cluster from TF_CONFIG, a JobSet's or an Indexed Job's environment.

  Only parses and checks; starts nothing. For an Indexed Job the derived
  TF_CONFIG is returned in `Cluster.tf_config`; `create_strategy` exports it.

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
  return Cluster(num_workers=1, worker_index=0, is_chief=True, tf_config=None,
                 source="single machine (no TF_CONFIG, no JOB_COMPLETION_INDEX)")


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
    return Cluster(num_workers=1, worker_index=0, is_chief=True, tf_config=None,
                   source=f"{source}, one task: single machine")
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


def wait_for_chief(cluster: Cluster, poll_s: float = 1.0, log_every_s: float = 30.0) -> None:
  """On a non-chief worker, returns once the chief accepts connections on its port.

  Creating MultiWorkerMirroredStrategy blocks in C++ until every worker has
  joined, and meanwhile TensorFlow's own SIGTERM handler (tsl
  preemption_notifier.cc, which logs "SIGTERM caught") swallows the signal:
  a worker deleted then would hang until the grace period's SIGKILL. The
  chief opens its port as soon as it starts its own strategy, so waiting for
  it here, in Python where SIGTERM is handled (exit 143), leaves only a short
  blocking join. If the chief fails before that (bad input: exit 2), a
  Job's FailJob deletes this worker at once, not 120 s later.
  """
  address = chief_address(cluster)
  if address is None or cluster.is_chief:
    return
  host, _, port = address.rpartition(":")
  host = host.strip("[]")
  started = last_log = time.monotonic()
  while True:
    try:
      socket.create_connection((host, int(port)), timeout=poll_s).close()
      return
    except OSError as e:  # not resolvable yet, refused, or timed out
      if time.monotonic() - last_log >= log_every_s:
        log.info("Waiting for the chief at %s to start (%.0f s so far: %s).", address,
                 time.monotonic() - started, e)
        last_log = time.monotonic()
      time.sleep(poll_s)


def _peer_hosts(cluster: Cluster) -> list[tuple[str, str]]:
  """(task, host) of every other task in the cluster spec, e.g. ("worker 1", "trainer-1.svc")."""
  me = (cluster.tf_config["task"]["type"], cluster.tf_config["task"]["index"])
  peers = []
  for kind, addresses in cluster.tf_config["cluster"].items():
    for index, address in enumerate(addresses):
      if (kind, index) != me:
        peers.append((f"{kind} {index}", address.rpartition(":")[0].strip("[]")))
  return peers


def wait_for_peers(cluster: Cluster, poll_s: float = 1.0, log_every_s: float = 30.0,
                   tick: Optional[Callable[[], object]] = None) -> None:
  """On the chief, returns once every other worker's host name resolves.

  A worker whose pod is still Pending (no GPU free on a shared cluster) has no
  IP, so its name is in no DNS record (the headless Service publishes a pod's
  address once it has one, Ready or not: publishNotReadyAddresses). Waiting
  for it inside MultiWorkerMirroredStrategy's start-up would leave SIGTERM to
  TensorFlow's C++ handler, which swallows it (`wait_for_chief`): an eviction
  by Kueue's waitForPodsReady, or a `kubectl delete`, would then hold the
  chief's GPU until the grace period's SIGKILL. Here, in Python, SIGTERM ends
  the chief at once (exit 143). Once every name resolves, the workers are
  starting, and the strategy's own join is short.

  `tick` runs at every poll: the chief's job-dir lock refresh, since a Pending
  worker can keep it waiting past the lock's lease (trainer/storage/joblock.py),
  after which a second training could take the job directory over.
  """
  if not cluster.is_multi_worker or not cluster.is_chief:
    return
  started = last_log = time.monotonic()
  waiting = _peer_hosts(cluster)
  while waiting:
    if tick:
      tick()
    unresolved = []
    for task, host in waiting:
      try:
        socket.getaddrinfo(host, None)
      except OSError as e:  # socket.gaierror: no address (yet)
        unresolved.append((task, host, e))
    waiting = [(task, host) for task, host, _ in unresolved]
    if not waiting:
      return
    if time.monotonic() - last_log >= log_every_s:
      log.info("Waiting for %s to get an address (%.0f s so far; a Pending pod has none): %s.",
               ", ".join(f"{task} ({host})" for task, host, _ in unresolved),
               time.monotonic() - started, unresolved[0][2])
      last_log = time.monotonic()
    time.sleep(poll_s)


def create_strategy(cluster: Cluster, collective_timeout_s: float) -> tf.distribute.Strategy:
  """Creates the strategy the cluster calls for, and logs the choice and why.

  Must run before TensorFlow executes any op: MultiWorkerMirroredStrategy
  configures collectives at context start-up.

  Args:
    cluster: from `cluster_from_env`.
    collective_timeout_s: bound on any one cross-worker collective. A peer
      that dies mid-step then fails the others within this many seconds
      instead of hanging them (config.collective_timeout_s).
  """
  gpus = tf.config.list_physical_devices("GPU")
  if cluster.is_multi_worker:
    environment.export_tf_config(json.dumps(cluster.tf_config))
    # NCCL is the fast all-reduce between GPUs; RING over gRPC is what CPUs have.
    impl = (tf.distribute.experimental.CommunicationImplementation.NCCL if gpus
            else tf.distribute.experimental.CommunicationImplementation.RING)
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=impl, timeout_seconds=collective_timeout_s)
    addresses = [a for kind in ("chief", "worker") for a in cluster.tf_config["cluster"].get(kind, [])]
    log.info("Joining a cluster of %d workers (%s); this waits until every worker is up.",
             cluster.num_workers, ", ".join(addresses))
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    log.info("Strategy: MultiWorkerMirroredStrategy, %d workers (this is worker %d%s), "
             "%d replicas, %s collectives; cluster from %s.", cluster.num_workers,
             cluster.worker_index, ", the chief" if cluster.is_chief else "",
             strategy.num_replicas_in_sync, impl.name, cluster.source)
  elif len(gpus) > 1:
    strategy = tf.distribute.MirroredStrategy()
    log.info("Strategy: MirroredStrategy over %d GPUs (one machine, several GPUs).", len(gpus))
  elif gpus:
    # Unlike the default strategy, OneDeviceStrategy's distributed datasets
    # copy each batch to the GPU ahead of the step that needs it.
    strategy = tf.distribute.OneDeviceStrategy("/gpu:0")
    log.info("Strategy: OneDeviceStrategy on /gpu:0 (one machine, one GPU).")
  else:
    strategy = tf.distribute.get_strategy()
    log.info("Strategy: default (one machine, CPU only).")
  return strategy


def worker_dir(cluster: Cluster, chief_dir: str) -> str:
  """Where this worker writes what the strategy needs: `chief_dir` on the chief.

  Other workers get a fresh local temporary directory; delete it with
  `remove_worker_dir` when done. Writing into a temporary location keeps
  workers from overwriting the chief's files in a shared job directory.
  """
  if cluster.is_chief:
    return chief_dir
  return tempfile.mkdtemp(prefix=f"trainer-worker{cluster.worker_index}-")


def remove_worker_dir(cluster: Cluster, path: str) -> None:
  if not cluster.is_chief:
    shutil.rmtree(path, ignore_errors=True)


_TASK_RE = re.compile(r"/job:(\w+)/(?:replica:\d+/)?task:(\d+)")


def peer_lost(error: tf.errors.OpError, cluster: Optional[Cluster] = None) -> errors.PeerLostError:
  """The error to exit with when a collective failed: names the lost worker and the cause.

  'lost contact with worker 1 (UNAVAILABLE: recvmsg:Connection reset by peer)'.
  TensorFlow's text names tasks in several places, this worker's own device among
  them ('{{function_node ..._device_/job:worker/replica:0/task:0/device:CPU:0}}
  ... Error reported from /job:worker/task:1: The following tasks are unhealthy'),
  so every task it names except this one is the lost one; where it names none
  but this one (an abort relayed by the coordination service), the message says
  'another worker' rather than guess.
  """
  text = error.message
  own = ((cluster.tf_config or {}).get("task", {}) if cluster else {})
  me = (own.get("type"), str(own.get("index"))) if own else None
  named = list(dict.fromkeys(m for m in _TASK_RE.findall(text) if m != me))
  who = ", ".join(f"{kind} {index}" for kind, index in named) or "another worker"
  cause = next((line.strip() for line in text.splitlines()
                if re.search(r"UNAVAILABLE|DEADLINE_EXCEEDED|CANCELLED|ABORTED|[Cc]onnection|"
                             r"aborted|timed out|[Tt]imeout|[Ss]ocket closed|heartbeat", line)),
               type(error).__name__)
  return errors.PeerLostError(
      f"lost contact with {who} ({cause[:300]}). Restart all workers; training resumes "
      "from the last checkpoint.")


@contextlib.contextmanager
def peer_errors(cluster: Cluster) -> Iterator[None]:
  """Around calls that run collectives: a failed one becomes PeerLostError (exit 129)."""
  try:
    yield
  except PEER_ERRORS as e:
    if not cluster.is_multi_worker:
      raise
    raise peer_lost(e, cluster) from e


def wait_for_every_worker(cluster: Cluster, barrier: Callable[[], object]) -> None:
  """Returns once every worker has called it: the end of a multi-worker run.

  The chief calls it after its export and metrics.json, so a non-chief
  worker that returns knows the results are durable. One that cannot pass
  fails with 129, and the Job recreates it together with the chief instead
  of marking its index Succeeded while the chief's work may still be lost (a
  Succeeded index never runs again). The chief has nothing left to lose by
  then: it logs a lost peer and returns.

  Args:
    barrier: a collective every worker runs (trainer/training/steps.py's `barrier`).
  """
  if not cluster.is_multi_worker:
    return
  log.info("Waiting until every worker has finished%s.",
           "" if cluster.is_chief else " (the chief's export is then durable)")
  try:
    with peer_errors(cluster):
      barrier()
  except errors.PeerLostError as e:
    if not cluster.is_chief:
      raise
    log.warning("After the export: %s. The results are durable; nothing to redo.", e)


def log_batch(strategy: tf.distribute.Strategy, global_batch: int, base_lr: float,
              reference_batch: int, rule: str, effective_lr: float) -> None:
  """States how the global batch splits and how the learning rate followed it."""
  replicas = strategy.num_replicas_in_sync
  log.info("Batch: global %d = %d replica(s) x %d per replica.", global_batch, replicas,
           global_batch // replicas)
  log.info("Learning rate: %.3g at batch %d, %s-scaled to %.3g at global batch %d.",
           base_lr, reference_batch, rule, effective_lr, global_batch)


def check_batch(strategy: tf.distribute.Strategy, global_batch: int) -> None:
  replicas = strategy.num_replicas_in_sync
  if global_batch % replicas:
    raise errors.ConfigError(
        f"--batch-size {global_batch} does not divide over {replicas} replicas: use a "
        f"multiple of {replicas}, e.g. {max(replicas, global_batch // replicas * replicas)}.")
