"""--profile-steps: a TensorFlow profiler trace of a window of training steps.

The trace goes to JOB_DIR/logs/train/plugins/profile/<time>/<host>.xplane.pb,
where TensorBoard's Profile tab (the tensorboard-plugin-profile package, the
`profile` extra) lists it under the `logs/train` run. Its overview page says
whether a step waited for input (input-bound) or computed (compute-bound).

The loop calls a compiled function for several steps at a time
(--steps-per-execution), so `ProfileWindow.before_call` shortens the calls
around the window: the trace starts exactly before step START and stops right
after step END. Steps count from 1, so step S takes the global step from
S - 1 to S. Each call in the window is marked as a profiler step named
`train` (as tf_keras's `fit` marks its calls), which the trace viewer shows
as one span per call. Known gap (xprof 2.21, seen on CPU): the overview
page's step-time breakdown finds no steps when they run inside a
tf.while_loop, as the compiled call's steps do, and says "No step time
measured"; a loop-free function gets its breakdown. The input pipeline
analyzer still times every tf.data stage on the host.

Only the chief traces. Workers run the same steps in lockstep (every step
all-reduces), so a slow worker shows on the chief's trace as time waiting in
collectives; and a worker must not write into the job directory
(trainer/storage/jobdir.py). A worker's own trace, if ever needed, is TensorFlow's
`tf.profiler.experimental.server` and TensorBoard's capture button away.
"""

from __future__ import annotations

import logging
from typing import Optional

import tensorflow as tf

log = logging.getLogger(__name__)


class ProfileWindow:
  """Starts and stops the profiler around global steps [first, last]; a no-op without a window.

  Use as a context manager around the training loop, so that a run which
  ends early (fewer steps than `last`) or fails still stops the profiler.
  """

  def __init__(self, window: Optional[tuple[int, int]], logdir: str, is_chief: bool):
    """`window`: (first, last) global steps to trace, both included (TrainConfig.profile_window).

    Every worker cuts its calls at the window's edges, the chief's way: under
    MultiWorkerMirroredStrategy each call is a collective (it starts with an
    all-reduce of the SIGTERM flag), so calls of different lengths on two
    workers would pair one's flag with the other's gradients and hang. Only
    the chief traces.
    """
    self.window = window
    self.is_chief = is_chief
    self.logdir = logdir
    self.tracing = False
    self.done = False
    self._step: Optional[tf.profiler.experimental.Trace] = None  # the call being traced

  def before_call(self, global_step: int, n: int) -> int:
    """The number of steps (at most `n`) the next call may run from `global_step`.

    Starts the trace when the next step is the window's first (or, after a
    resume inside the window, any step in it), and marks the call as a
    profiler step. Calls end at the window's edges: at global step first - 1
    and at last.
    """
    if not self.window or self.done:
      return n
    first, last = self.window
    if global_step < first - 1:
      return min(n, first - 1 - global_step)
    if global_step >= last:
      return n
    if self.is_chief:
      if not self.tracing:
        self._start(global_step + 1, last)
      self._step = tf.profiler.experimental.Trace("train", step_num=global_step + 1, _r=1)
      self._step.__enter__()
    return min(n, last - global_step)

  def after_call(self, global_step: int) -> None:
    """Ends the call's profiler step; stops the trace once `global_step` reaches the window's end."""
    self._end_step()
    if self.window and global_step >= self.window[1]:
      if self.tracing:
        self._stop(save=True)
      self.done = True

  def __enter__(self) -> "ProfileWindow":
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    self._end_step()
    if self.tracing:
      # Training ended inside the window: keep what was traced, unless it
      # failed or was preempted, when the grace period is better spent on
      # the checkpoint than on writing a trace.
      self._stop(save=exc_type is None)

  def _end_step(self) -> None:
    if self._step:
      self._step.__exit__(None, None, None)
      self._step = None

  def _start(self, first: int, last: int) -> None:
    log.info("Profiling global steps %d to %d into %s (TensorBoard's Profile tab).",
             first, last, self.logdir)
    tf.profiler.experimental.start(self.logdir)
    self.tracing = True

  def _stop(self, save: bool) -> None:
    tf.profiler.experimental.stop(save=save)
    self.tracing, self.done = False, True
    if save:
      log.info("Profile written under %s/plugins/profile.", self.logdir)
