"""The optimiser: Adam or momentum SGD with the run's learning-rate schedule, and weight decay if asked.

With --optimizer adam (the default), --weight-decay 0 (the default) is plain
Adam, exactly as before the flag existed. Above 0 it is AdamW (Loshchilov & Hutter, "Decoupled Weight Decay
Regularization", ICLR 2019): each step shrinks every kernel by
`learning_rate(step) * weight_decay` of its value, outside Adam's moment
estimates, so the decay is not rescaled per weight by Adam's denominator as
an L2 term in the loss would be. Because Keras multiplies the decay by the
scheduled learning rate, it follows the warm-up and the cosine decay, as in
the paper (where it follows the schedule multiplier).

--optimizer sgd is momentum SGD (keras.optimizers.SGD: m = momentum * m -
lr * g; w += m, Caffe's form) with --weight-decay as L2 regularisation, as in
the ResNet paper's recipe (He et al. 2015, sec. 4.2: "weight decay of 0.0001
and momentum of 0.9", Caffe's and Torch's SGD) and PyTorch's SGD: each
kernel's gradient gets `weight_decay * kernel` added before the momentum
update, the gradient of a loss term weight_decay / 2 * |kernel|^2. Coupled,
not Keras's decoupled SGD(weight_decay=...), which shrinks the weights
outside the momentum: with momentum 0.9 a decay that goes through the
momentum acts ~10 times as strongly at steady state, so the decoupled form
with the same number would be a much weaker regulariser than the paper's.
Added in the update step, after the gradients are all-reduced, rather than
as a loss term: every replica adds the same term to the same mirrored
weights, and no loss needs dividing by the number of replicas.

Biases are not decayed (the "no bias decay" of He et al., "Bag of Tricks for
Image Classification with Convolutional Neural Networks", CVPR 2019): they
are 234 of the tutorial CNN's 122,570 parameters, and they set offsets, not
how strongly the model responds to its input, which is what decay restrains.
The same rule leaves BatchNorm's gammas and betas (1-D) undecayed: the
paper does not say which tensors it decays, and a BatchNorm after a kernel
makes the kernel's scale irrelevant to the output, so what decaying kernels
does there is raise their effective learning rate (van Laarhoven 2017,
"L2 Regularization versus Batch and Weight Normalization").
"""

from __future__ import annotations

from typing import Sequence

import keras

from trainer.training import schedule
from trainer.config import TrainConfig


def is_decayed(variable) -> bool:
  """Whether weight decay applies: to kernels (2-D and up), not to biases or BatchNorm (1-D)."""
  return len(variable.shape) > 1


def decayed(variables: Sequence[keras.Variable]) -> list[keras.Variable]:
  """The variables weight decay applies to (`is_decayed`)."""
  return [v for v in variables if is_decayed(v)]


class L2SGD(keras.optimizers.SGD):
  """Momentum SGD whose kernels' gradients get `l2 * kernel` added (L2 regularisation)."""

  def __init__(self, l2: float, **kwargs):
    super().__init__(**kwargs)
    self.l2 = l2

  def update_step(self, gradient, variable, learning_rate):
    # By the variable itself: inside a distributed update `variable` is one
    # replica's component, not an object `decayed` was given.
    if self.l2 and is_decayed(variable):
      gradient = keras.ops.add(keras.ops.cast(gradient, variable.dtype),
                               keras.ops.multiply(keras.ops.cast(self.l2, variable.dtype), variable))
    super().update_step(gradient, variable, learning_rate)

  def get_config(self):
    return {**super().get_config(), "l2": self.l2}


def learning_rate(config: TrainConfig, steps_per_epoch: int) -> schedule.LearningRate:
  """The run's schedule, counted in global steps (`steps_per_epoch` of them per epoch)."""
  return schedule.LearningRate(
      peak=config.effective_learning_rate(),
      warmup_steps=int(round(config.warmup_epochs * steps_per_epoch)),
      total_steps=steps_per_epoch * config.epochs, cosine=config.lr_schedule == "cosine",
      step_boundaries=[int(round(epoch * steps_per_epoch)) for epoch in config.lr_step_epochs],
      step_factor=config.lr_step_factor)


def create(config: TrainConfig, steps_per_epoch: int, variables: Sequence[keras.Variable],
           mixed_precision: str = "off") -> keras.optimizers.Optimizer:
  """Builds the run's optimiser over `variables` (the model's trainable variables).

  Call it under the strategy's scope, so that the optimiser's slots are
  mirrored like the variables they belong to.

  Args:
    config: learning rate, its scaling and schedule, weight decay, precision.
    steps_per_epoch: global steps per epoch, which the schedule counts in.
    variables: what the optimiser will update; it is built over them.
    mixed_precision: the resolved compute precision (trainer/training/precision.py's
      policy: off, bfloat16 or float16).

  Returns:
    Adam (or AdamW) or momentum SGD, inside a LossScaleOptimizer for float16.
  """
  lr = learning_rate(config, steps_per_epoch)
  if config.optimizer == "sgd":
    optimizer = L2SGD(l2=config.weight_decay, learning_rate=lr, momentum=config.momentum)
  elif config.weight_decay:
    optimizer = keras.optimizers.AdamW(learning_rate=lr, weight_decay=config.weight_decay)
    kernels = {id(v) for v in decayed(variables)}
    # By variable rather than by name: the rule is "1-D is a bias", whatever a layer calls it.
    optimizer.exclude_from_weight_decay(var_list=[v for v in variables if id(v) not in kernels])
  else:
    optimizer = keras.optimizers.Adam(learning_rate=lr)
  if mixed_precision == "float16":
    # float16 gradients underflow without loss scaling; bfloat16 has
    # float32's exponent range and needs none.
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  optimizer.build(variables)
  return optimizer
