"""A lease lock on the job directory, so that two trainings never write one JOB_DIR.

Two trainings can share a JOB_DIR: `kubectl delete job && kubectl apply` lets
the old pods drain for up to their 120 s grace period while the new ones
start, or a user applies two manifests. Their chiefs' CheckpointManagers
would then overwrite each other's checkpoints. So the chief (only the chief:
other workers write nothing to JOB_DIR) holds `JOB_DIR/lock.json` for the
whole run. The object is JSON naming its holder: `job_uid`, `job_name`,
`host`, `pid`, a random `token` (this holder, exactly), `acquired_at`,
`refreshed_at`, `expires_at` (unix seconds on the holder's clock), `lease_s`.

Creation is create-only. On GCS the upload carries `ifGenerationMatch=0`,
GCS's precondition that the object does not exist yet
(https://cloud.google.com/storage/docs/request-preconditions): of concurrent
creators exactly one succeeds, the others get 412. Locally the record is
written to a temporary file and `os.link`ed into place, which fails if the
name exists; a reader therefore sees a whole record or none.

An existing lock may be taken over when:

a. its lease has expired: its holder stopped refreshing (SIGKILL, node lost)
   for longer than any gap between the refreshes of a live trainer. Clocks
   of different hosts may disagree by seconds; the lease is minutes.
b. it holds our non-empty `job_uid` (the Kubernetes Job's uid): we are a
   replacement pod of the same Job after a crash. k8s/job.yaml's
   `podReplacementPolicy: Failed` starts it only once the old pod is gone.
c. neither side has a `job_uid` (laptop runs), it is on our host and its pid
   is not alive: a rerun after kill -9. Not for pods: a rerun of a Job with
   the same name gets the same hostnames, and pids live in per-pod
   namespaces, so a pid there says nothing about another pod.

Every change after creation is conditional on the version read, so of two
concurrent takers (or a taker and a late refresh) one wins and the other
learns it lost: GCS with `ifGenerationMatch=<generation read>`; locally the
read-check-write runs under an `fcntl.flock` on `JOB_DIR/lock.json.mutex`
(held for milliseconds, released by the kernel if its process dies) and
writes with `os.replace`, so readers still see whole records. Both stores
live in `trainer.storage.lockstore`.

`refresh` extends the lease and raises `JobDirLocked` if the lock is no
longer ours (taken over after we stalled past our lease, or deleted), so the
caller stops before writing; a GCS outage is ridden out while at least a
quarter of the lease is left. `maybe_refresh` does that only once a quarter
of the lease has passed, so it can be called at every step. `release`
deletes the lock only if it is still ours, and never raises. Locally the
empty `lock.json.mutex` stays in JOB_DIR; it holds no state.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from typing import Any, Mapping, Optional

from trainer import environment
from trainer import errors
from trainer.storage import lockstore
from trainer.storage import api as storage

log = logging.getLogger(__name__)

LOCK_NAME = "lock.json"
# 15 minutes: far longer than any gap between refreshes (the trainer refreshes
# at every logged step and every epoch end, seconds to a few minutes apart),
# and short enough that a SIGKILLed job's directory frees up soon after.
DEFAULT_LEASE_S = 15 * 60.0
# Seconds of retries for transient GCS errors on one lock operation (read when a
# lock is created). Acquiring happens at start-up, where an unreachable GCS
# should fail the pod promptly.
RETRY_DEADLINE_S = 15.0


# Seconds between attempts while waiting for another training's lock.
WAIT_POLL_S = 5.0


def hold(job_dir: str, wait_s: float, lease_s: float = DEFAULT_LEASE_S,
         env: Optional[Mapping[str, str]] = None) -> "JobDirLock":
  """Acquires the job dir's lock, waiting up to `wait_s` seconds for its holder to let go.

  The wait covers a rerun whose predecessor's pods still drain (up to the
  pods' grace period), which release the lock as they exit.

  Raises:
    JobDirLocked: still held by another training after `wait_s`; names the holder.
  """
  lock = JobDirLock(job_dir, lease_s, env)
  deadline = time.monotonic() + wait_s
  while True:
    try:
      return lock.acquire()
    except errors.JobDirLocked as e:
      left = deadline - time.monotonic()
      if left <= 0:
        raise errors.JobDirLocked(f"{e} (waited {wait_s:.0f} s, --job-lock-wait-s)") from None
      log.warning("%s Waiting up to %.0f s more for it.", e, left)
      time.sleep(min(WAIT_POLL_S, left))


def read_lock(job_dir: str) -> Optional[dict]:
  """The lock record in `job_dir` (see the module docstring), or None if it is free."""
  return lockstore.open_store(storage.join(job_dir, LOCK_NAME), RETRY_DEADLINE_S).read()[0]


class JobDirLock:
  """The chief's lease on JOB_DIR/lock.json; a context manager.

  Args:
    job_dir: local directory or gs://BUCKET/prefix.
    lease_s: seconds the lock stays ours without a refresh.
    env: the environment (trainer/environment.py) holding TRAINER_JOB_UID and
      TRAINER_JOB_NAME; default: this process's.
  """

  def __init__(self, job_dir: str, lease_s: float = DEFAULT_LEASE_S,
               env: Optional[Mapping[str, str]] = None):
    env = environment.read() if env is None else env
    self.path = storage.join(job_dir, LOCK_NAME)
    self.lease_s = lease_s
    self.job_uid = env.get(environment.TRAINER_JOB_UID, "")
    self.job_name = env.get(environment.TRAINER_JOB_NAME, "")
    self.token = uuid.uuid4().hex
    self._store = lockstore.open_store(self.path, RETRY_DEADLINE_S)
    self._version: Any = None  # GCS generation or local token of our record; None: not held
    self._acquired_at = 0.0
    self._refreshed = 0.0  # time.monotonic() of the last write
    self._expires_at = self._pending_expiry = 0.0  # unix seconds: our written, next lease end

  @property
  def held(self) -> bool:
    return self._version is not None

  def acquire(self) -> "JobDirLock":
    """Creates the lock, or takes over a stale one (see the module docstring).

    Raises:
      JobDirLocked: another training holds it; the message names the holder.
      StorageError: the bucket is missing or forbids it, or the path is unwritable.
      TransientError: GCS could not be reached or kept failing.
    """
    self._acquired_at = time.time()
    with self._store.atomic():
      for _ in range(5):  # only a holder that keeps changing under us loops
        try:
          self._wrote(self._store.write(self._record(), None))
          log.info("Holding the job-dir lock %s (lease %.0f s).", self.path, self.lease_s)
          return self
        except lockstore.Conflict:
          pass
        current, version = self._store.read()
        if current is None:
          continue  # released between our create and our read
        if current.get("token") == self.token:
          return self._wrote(version)  # our create succeeded, then its retry got 412
        reason = self._takeover_reason(current)
        if reason is None:
          raise errors.JobDirLocked(self._locked_message(current))
        try:
          self._wrote(self._store.write(self._record(), version))
        except lockstore.Conflict:
          continue
        log.warning("Took over the job-dir lock %s (%s) from %s.", self.path, reason,
                    _describe(current, time.time()))
        return self
    raise errors.JobDirLocked(f"the job-dir lock {self.path} kept changing while we tried to "
                              "take it: another training is starting in this --job-dir; use "
                              "a new --job-dir or stop the other training.")

  def refresh(self) -> None:
    """Extends our lease now.

    Raises:
      JobDirLocked: the lock is no longer ours (we stalled past our lease and
        another training took over, or it was deleted); stop writing.
      TransientError: GCS kept failing and our lease is about to lapse.
    """
    if not self.held:
      raise errors.JobDirLocked(f"the job-dir lock {self.path} is not held by this training.")
    try:
      with self._store.atomic():
        self._wrote(self._store.write(self._record(), self._version))
    except lockstore.Conflict:
      self._version = None
      current, _ = self._store.read()
      what = (f"another training took over the job dir: the lock {self.path} is now held by "
              f"{_describe(current, time.time())}" if current else
              f"the job-dir lock {self.path} was deleted while this training held it")
      raise errors.JobDirLocked(
          f"{what}. This training (its lease: {self.lease_s:.0f} s) stops before writing "
          "anything more; use a separate --job-dir per training.") from None
    except errors.TransientError as e:
      # A blip must not kill a training while its lease still holds; retry next time.
      if time.time() < self._expires_at - self.lease_s / 4:
        log.warning("Could not refresh the job-dir lock %s, will retry: %s", self.path, e)
        return
      raise

  def maybe_refresh(self) -> bool:
    """Refreshes if a quarter of the lease has passed since the last write; cheap otherwise.

    Returns:
      Whether a refresh was attempted.
    """
    if time.monotonic() - self._refreshed < self.lease_s / 4:
      return False
    self.refresh()
    return True

  def release(self) -> None:
    """Deletes the lock if it is still ours. Never raises: it runs in `finally` blocks."""
    if not self.held:
      return
    try:
      with self._store.atomic():
        self._store.delete(self._version)
    except lockstore.Conflict:
      log.warning("Not deleting the job-dir lock %s: another training holds it now.", self.path)
    except Exception as e:  # pylint: disable=broad-except
      log.warning("Could not delete the job-dir lock %s (delete it by hand once no training "
                  "uses the job dir): %s", self.path, e)
    self._version = None

  def __enter__(self) -> "JobDirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()

  def _wrote(self, version) -> "JobDirLock":
    self._version = version
    self._refreshed = time.monotonic()
    self._expires_at = self._pending_expiry
    return self

  def _record(self) -> bytes:
    now = time.time()
    self._pending_expiry = now + self.lease_s
    return json.dumps({
        "job_uid": self.job_uid, "job_name": self.job_name, "host": socket.gethostname(),
        "pid": os.getpid(), "token": self.token, "acquired_at": self._acquired_at,
        "refreshed_at": now, "expires_at": now + self.lease_s, "lease_s": self.lease_s,
    }, indent=2, sort_keys=True).encode() + b"\n"

  def _takeover_reason(self, current: dict) -> Optional[str]:
    """Why `current` may be taken over (rules a-c of the module docstring), or None."""
    expires_at = current.get("expires_at")
    if isinstance(expires_at, (int, float)) and expires_at < time.time():
      return f"its lease expired {time.time() - expires_at:.0f} s ago"
    if self.job_uid and current.get("job_uid") == self.job_uid:
      return "same Kubernetes Job: we replace its crashed pod"
    if (not self.job_uid and not current.get("job_uid")
        and current.get("host") == socket.gethostname()
        and isinstance(current.get("pid"), int) and not _pid_alive(current["pid"])):
      return "its process is gone from this host"
    return None

  def _locked_message(self, current: dict) -> str:
    return (f"the job dir is in use by another training: {_describe(current, time.time())}. "
            "Wait for it to finish; to rerun a Job use `kubectl delete job NAME "
            "--cascade=foreground` so that its old pods are gone first, or use a new "
            f"--job-dir; if you are sure no training uses it, delete {self.path}.")


def _describe(record: dict, now: float) -> str:
  job = record.get("job_name") or "a run outside Kubernetes"
  if record.get("job_uid"):
    job += f" (job uid {record['job_uid']})"
  expires = record.get("expires_at")
  lease = (f"lease expires in {expires - now:.0f} s" if isinstance(expires, (int, float))
           else "no readable lease")
  since = record.get("acquired_at")
  since = (time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since))
           if isinstance(since, (int, float)) else "an unknown time")
  return (f"{job} on host {record.get('host', '?')} pid {record.get('pid', '?')}, "
          f"holding it since {since}, {lease}")


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # another user's process
  return True
