"""The optimiser: Adam with the run's learning-rate schedule, and decoupled weight decay if asked.

--weight-decay 0 (the default) is plain Adam, exactly as before the flag
existed. Above 0 it is AdamW (Loshchilov & Hutter, "Decoupled Weight Decay
Regularization", ICLR 2019): each step shrinks every kernel by
`learning_rate(step) * weight_decay` of its value, outside Adam's moment
estimates, so the decay is not rescaled per weight by Adam's denominator as
an L2 term in the loss would be. Because Keras multiplies the decay by the
scheduled learning rate, it follows the warm-up and the cosine decay, as in
the paper (where it follows the schedule multiplier).

Biases are not decayed (the "no bias decay" of He et al., "Bag of Tricks for
Image Classification with Convolutional Neural Networks", CVPR 2019): they
are 234 of the tutorial CNN's 122,570 parameters, and they set offsets, not
how strongly the model responds to its input, which is what decay restrains.
"""

from __future__ import annotations

from typing import Sequence

import keras

from trainer import schedule
from trainer.config import TrainConfig


def decayed(variables: Sequence[keras.Variable]) -> list[keras.Variable]:
  """The variables weight decay applies to: kernels (2-D and up), not biases (1-D)."""
  return [v for v in variables if len(v.shape) > 1]


def create(config: TrainConfig, steps_per_epoch: int,
           variables: Sequence[keras.Variable]) -> keras.optimizers.Optimizer:
  """Builds the run's optimiser over `variables` (the model's trainable variables).

  Call it under the strategy's scope, so that the optimiser's slots are
  mirrored like the variables they belong to.

  Args:
    config: learning rate, its scaling and schedule, weight decay, precision.
    steps_per_epoch: global steps per epoch, which the schedule counts in.
    variables: what the optimiser will update; it is built over them.

  Returns:
    Adam (or AdamW), inside a LossScaleOptimizer for float16.
  """
  lr = schedule.LearningRate(
      peak=config.effective_learning_rate(),
      warmup_steps=int(round(config.warmup_epochs * steps_per_epoch)),
      total_steps=steps_per_epoch * config.epochs, cosine=config.lr_schedule == "cosine")
  if config.weight_decay:
    optimizer = keras.optimizers.AdamW(learning_rate=lr, weight_decay=config.weight_decay)
    kernels = {id(v) for v in decayed(variables)}
    # By variable rather than by name: the rule is "1-D is a bias", whatever a layer calls it.
    optimizer.exclude_from_weight_decay(var_list=[v for v in variables if id(v) not in kernels])
  else:
    optimizer = keras.optimizers.Adam(learning_rate=lr)
  if config.mixed_precision == "float16":
    # float16 gradients underflow without loss scaling; bfloat16 has
    # float32's exponent range and needs none.
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  optimizer.build(variables)
  return optimizer
