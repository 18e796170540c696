"""Distribution: which strategy, and what the workers do together.

The cluster itself, read from the environment (which worker this is, who is
the chief), is trainer/cluster/resolver.py's. From it:

* a cluster of two or more workers: `MultiWorkerMirroredStrategy` over its
  chief and workers, once the chief can reach every worker's host and every
  worker the chief's port;
* otherwise one machine: `MirroredStrategy` over two or more GPUs, else the
  default strategy (one GPU or the CPU).

Only the chief writes to the job directory; other workers write what the
strategy needs (checkpoints) into a local temporary directory they delete.
A peer that goes away mid-collective becomes a PeerLostError naming it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import socket
import tempfile
import time
from typing import Callable, Iterator, Optional

import tensorflow as tf

from trainer import environment
from trainer import errors
from trainer.cluster.resolver import Cluster, chief_address

log = logging.getLogger(__name__)


# Errors a collective raises when a peer worker has gone away. Only calls that
# run collectives (training steps, evaluation, the final barrier) map them to
# a lost peer: the same classes from a file write mean storage trouble
# (trainer/training/checkpoints.py).
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
               tf.errors.CancelledError, tf.errors.AbortedError)


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
    cluster: from `resolver.cluster_from_env`.
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
