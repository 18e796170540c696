"""Training progress as a person reads it: a bar per epoch on a terminal, log lines elsewhere.

On an interactive terminal the chief draws one tqdm bar per epoch: images
done, images/s and the time left in the epoch (tqdm's own smoothed counting),
with the latest training loss and accuracy beside them. Log records printed
meanwhile go through `tqdm.write` (`logging_redirect_tqdm`), so they appear
above the bar instead of breaking it. Where stderr is not a terminal
(`kubectl logs`, CI, a file) nothing changes: one log line every
`--log-every-steps` steps, with no carriage returns or escape codes.

Only the chief draws: its bar counts the global batch, so it is the job's
progress, and workers of a multi-worker run that share a terminal (a local
run) would otherwise fight over its line. The other workers log lines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import IO, Optional

import tqdm
from tqdm.contrib import logging as tqdm_logging

MODES = ("auto", "bar", "log")

# Terminal size, in characters, where the terminal reports none: a
# pseudo-terminal nobody sized (`script` under CI, some container runtimes)
# says 0 x 0, and tqdm would then trim or hide the bar.
FALLBACK_COLUMNS, FALLBACK_ROWS = 100, 24


def wants_bar(mode: str, is_chief: bool, stream: IO) -> bool:
  """Whether to draw bars: `bar`, or `auto` on a terminal, and only on the chief."""
  if mode not in MODES:
    raise ValueError(f"progress mode {mode!r} is not one of {MODES}")
  if not is_chief or mode == "log":
    return False
  return mode == "bar" or stream.isatty()


class Lines:
  """Plain progress: one log line per `train_metrics` call, as before bars existed.

  The loop calls `start_epoch`, `advance` after each compiled call,
  `train_metrics` whenever it reads the training sums, and `end_epoch` when
  the epoch's last step is done; it enters the object around training.
  """

  def __init__(self, log: logging.Logger, epochs: int, steps_per_epoch: int,
               images_per_step: int):
    """`log`: the loop's logger, so the lines keep its name."""
    self.log = log
    self.epochs = epochs
    self.steps_per_epoch = steps_per_epoch
    self.images_per_step = images_per_step

  def __enter__(self) -> "Lines":
    return self

  def __exit__(self, *exc_info) -> None:
    del exc_info

  def start_epoch(self, epoch: int, step: int) -> None:
    """`epoch` counts from 0; `step` is where it starts (a resumed run starts mid-epoch)."""

  def advance(self, steps: int) -> None:
    """`steps` more training steps are done."""

  def train_metrics(self, epoch: int, step: int, loss: float, accuracy: float, lr: float,
                    images_per_sec: float) -> None:
    """The training sums since the last call (epoch from 0, step within it)."""
    self.log.info("epoch %d/%d step %d/%d: loss %.4f accuracy %.4f lr %.3g, %.0f images/s",
                  epoch + 1, self.epochs, step, self.steps_per_epoch, loss, accuracy, lr,
                  images_per_sec)

  def end_epoch(self) -> None:
    """The epoch's training steps are done (evaluation follows)."""


class Bar(Lines):
  """A tqdm bar per epoch, counting images; loss and accuracy show in its postfix."""

  def __init__(self, log: logging.Logger, epochs: int, steps_per_epoch: int,
               images_per_step: int, stream: Optional[IO] = None):
    super().__init__(log, epochs, steps_per_epoch, images_per_step)
    self.stream = stream or sys.stderr
    self.bar: Optional[tqdm.tqdm] = None
    self._redirect = contextlib.ExitStack()

  def __enter__(self) -> "Bar":
    # Console handlers on the root logger (task.py's) write through
    # tqdm.write while bars are up, above the bar; file handlers are untouched.
    self._redirect.enter_context(tqdm_logging.logging_redirect_tqdm())
    return self

  def __exit__(self, *exc_info) -> None:
    self.end_epoch()  # an exception (SIGTERM, Ctrl-C) leaves the bar where it stopped
    self._redirect.close()

  def start_epoch(self, epoch: int, step: int) -> None:
    self.end_epoch()
    sized = _columns(self.stream) > 0
    self.bar = tqdm.tqdm(
        desc=f"epoch {epoch + 1}/{self.epochs}", file=self.stream,
        total=self.steps_per_epoch * self.images_per_step,
        initial=step * self.images_per_step,
        # "epoch 2/7:  26%|██▌      | 12800/50000 images [00:09<00:26, 1.41k images/s, loss=...]":
        # exact counts, a rate with 3 significant digits.
        bar_format="{l_bar}{bar}| {n}/{total} images [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]",
        unit=" images", unit_scale=True, leave=True,
        # Follow the terminal's width as it is resized, where it has one.
        dynamic_ncols=sized, ncols=None if sized else FALLBACK_COLUMNS,
        nrows=None if sized else FALLBACK_ROWS)

  def advance(self, steps: int) -> None:
    if self.bar is not None:
      self.bar.update(steps * self.images_per_step)

  def train_metrics(self, epoch: int, step: int, loss: float, accuracy: float, lr: float,
                    images_per_sec: float) -> None:
    if self.bar is not None:
      # The learning rate stays in TensorBoard: the line must fit 80 columns with a bar.
      self.bar.set_postfix_str(f"loss={loss:.4f}, accuracy={accuracy:.4f}")

  def end_epoch(self) -> None:
    if self.bar is not None:
      self.bar.close()
      self.bar = None


def _columns(stream: IO) -> int:
  """The terminal's width in characters; 0 where unknown."""
  try:
    return os.get_terminal_size(stream.fileno()).columns
  except (AttributeError, OSError, ValueError):
    return 0


def create(mode: str, is_chief: bool, log: logging.Logger, epochs: int, steps_per_epoch: int,
           images_per_step: int, stream: Optional[IO] = None) -> Lines:
  """Bars if `wants_bar` says so (on `stream`, default stderr), else log lines."""
  stream = stream or sys.stderr
  if wants_bar(mode, is_chief, stream):
    return Bar(log, epochs, steps_per_epoch, images_per_step, stream)
  return Lines(log, epochs, steps_per_epoch, images_per_step)
