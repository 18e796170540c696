"""SIGTERM as a request that the training run honours at a safe point.

Kubernetes sends SIGTERM before it stops a pod (preemption, node drain,
`kubectl delete pod`) and SIGKILL once the grace period is over (k8s/job.yaml:
120 s). A handler that only sets a flag lets the run choose the moment:

* while training, the end of the current training call: the flag is
  all-reduced with the next call, so every worker stops after the same step,
  saves a checkpoint and exits with code 143 (`errors.Preempted`);
* once the last training call has started, nothing stops it but a peer's
  earlier SIGTERM (its flag is read as the call starts); and after it the
  final evaluation takes seconds and the export is published atomically, so
  the run finishes them and exits 0. Stopping then would only leave a rerun
  the same work.
"""

from __future__ import annotations

import logging
import signal

from trainer import errors

log = logging.getLogger(__name__)


class SigtermWatch:
  """While entered, records SIGTERM instead of dying of it; restores the old handler on exit."""

  def __init__(self, peers: bool = False):
    """`peers`: whether other workers train with this one (their SIGTERMs stop it too)."""
    self.received = False
    self.finishing = False  # set once the last training step has run
    # Set once the last training call has read the stop flag: a SIGTERM from then on can
    # stop it only through a peer that was told before it (the flag is all-reduced as
    # the call starts), so the call runs to its end and the run finishes.
    self.in_last_call = False
    self.peers = peers

  def __enter__(self) -> "SigtermWatch":
    self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    signal.signal(signal.SIGTERM, self._previous)

  def _handle(self, signum, frame) -> None:
    del signum, frame
    self.received = True
    if self.finishing:
      log.warning("SIGTERM received after training: finishing the final evaluation and the "
                  "export first.")
    elif self.in_last_call:
      log.warning("SIGTERM received during the last training call: finishing it, the final "
                  "evaluation and the export first%s.",
                  f" (unless another worker was told before the call started: then every "
                  f"worker saves a checkpoint and exits with code {errors.EXIT_PREEMPTED})"
                  if self.peers else "")
    else:
      log.warning("SIGTERM received: saving a checkpoint after the current training call, "
                  "then exiting with code %d.", errors.EXIT_PREEMPTED)
