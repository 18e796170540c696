"""Errors a user can cause, and the process exit codes they map to.

Every error that bad input can trigger is a `UserError` with a one-line,
actionable message. `trainer.task` catches them once, prints the message and
exits with the error's code. Anything else is a bug or an infrastructure
failure and exits 1 with a traceback.
"""

# Exit codes. k8s/job.yaml's podFailurePolicy, k8s/tfjob.yaml's restart policy
# and README depend on these values. The retryable ones are >= 128 because
# Kubeflow's `restartPolicy: ExitCode` retries exactly those and treats 1-127
# as permanent.
EXIT_OK = 0
# Unexpected failure (a bug, out of memory, ...). Kubernetes retries it within
# the Job's backoff limit.
EXIT_FAILURE = 1
# Bad input: flags, data, paths, permissions. Retrying cannot help, so the Job
# fails at once.
EXIT_USAGE = 2
# A peer worker was lost (pod deleted, node gone, network partition). The
# state from the last checkpoint is intact; restarting every worker resumes.
# k8s/job.yaml ignores it (no retry budget spent): the failure belongs to the
# peer, whose own exit is counted on its own index.
EXIT_PEER_LOST = 129  # 128 + SIGHUP: a peer hung up
# Infrastructure failed in a way a later attempt can fix: GCS unreachable or
# answering 5xx/429 past the client's retries, GKE's metadata server not ready
# in a pod's first seconds, a checkpoint write that ran out of retries.
# Counted against the Job's retry budget, so an outage cannot loop forever.
EXIT_TRANSIENT = 142  # 128 + SIGALRM: "try again later"
# SIGTERM (preemption, node drain) was received, every worker saved a
# checkpoint at the same step, and the job can resume from it.
EXIT_PREEMPTED = 143  # 128 + SIGTERM, what a process killed by SIGTERM reports


class UserError(Exception):
  """An error caused by the user's input; the message says what to do."""

  exit_code = EXIT_USAGE


class ConfigError(UserError):
  """A flag or configuration value is invalid; `flag` names it (e.g. 'warmup-epochs') when one does."""

  def __init__(self, message: str, flag: "str | None" = None):
    super().__init__(message)
    self.flag = flag


class DataError(UserError):
  """The dataset cannot be found, read or used."""


class StorageError(UserError):
  """A path or bucket cannot be read or written."""


class ClusterError(UserError):
  """The cluster description (TF_CONFIG or the Indexed-Job environment) is malformed."""


class JobDirLocked(UserError):
  """Another training holds the job directory's lock; the message names it."""


class TransientError(Exception):
  """A storage or network failure that a rerun of the pod can get past."""

  exit_code = EXIT_TRANSIENT


class CleanupError(Exception):
  """A failed publish could not delete everything it wrote; the message names what is left.

  Raised from the error that made the publish fail. Exits 1 with a traceback:
  someone has to look, and the objects it names may need deleting by hand.
  """

  exit_code = EXIT_FAILURE


class PeerLostError(Exception):
  """Another worker stopped answering; training must restart from a checkpoint."""

  exit_code = EXIT_PEER_LOST


class Preempted(Exception):
  """Training stopped on SIGTERM after saving a checkpoint."""

  exit_code = EXIT_PREEMPTED
