"""The learning-rate schedule: linear warm-up, then constant, cosine or step decay.

The peak rate is `TrainConfig.effective_learning_rate()`: --learning-rate
scaled to the global batch (sqrt by default, the usual rule for Adam).
Warm-up keeps the first large-batch steps from diverging; cosine decay to 0
at the last step settles the final epochs (docs/performance.md). The step
schedule is the ResNet paper's (He et al. 2015, sec. 4.2): the rate is
divided by 10 at fixed points of training.
"""

from __future__ import annotations

import math
from typing import Sequence

import keras
import tensorflow as tf


class LearningRate(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up from 0 to `peak`, then constant, cosine decay to 0, or steps down.

  `step_boundaries` (global steps, increasing): from each of them on, the rate
  is multiplied by `step_factor` once more; empty for the other schedules.
  """

  def __init__(self, peak: float, warmup_steps: int, total_steps: int, cosine: bool,
               step_boundaries: Sequence[int] = (), step_factor: float = 0.1):
    self.peak = peak
    self.warmup_steps = warmup_steps
    self.total_steps = total_steps
    self.cosine = cosine
    self.step_boundaries = tuple(int(b) for b in step_boundaries)
    self.step_factor = step_factor

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    lr = tf.constant(self.peak, tf.float32)
    if self.warmup_steps:
      # (step + 1): the first step already moves the weights.
      lr *= tf.minimum(1.0, (step + 1.0) / self.warmup_steps)
    if self.cosine:
      decay_steps = max(1, self.total_steps - self.warmup_steps)
      progress = tf.clip_by_value((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
      lr *= 0.5 * (1.0 + tf.cos(math.pi * progress))
    if self.step_boundaries:
      passed = tf.reduce_sum(tf.cast(step >= tf.constant(self.step_boundaries, tf.float32),
                                     tf.float32))
      lr *= tf.pow(tf.constant(self.step_factor, tf.float32), passed)
    return lr

  def get_config(self):
    return dict(peak=self.peak, warmup_steps=self.warmup_steps,
                total_steps=self.total_steps, cosine=self.cosine,
                step_boundaries=self.step_boundaries, step_factor=self.step_factor)
