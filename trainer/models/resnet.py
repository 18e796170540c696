"""ResNet-20 of He et al. 2015 ("Deep Residual Learning for Image Recognition", section 4.2).

269,722 trainable parameters on CIFAR-10 (the paper's 0.27M), option-A shortcuts.
"""

from __future__ import annotations

from typing import Optional

import keras
from keras import layers


# Per-channel mean and standard deviation of CIFAR-10's 50,000 training images,
# in [0, 1] units (RGB). The paper subtracts the per-pixel mean image; a
# per-channel normalisation by fixed constants does the same centring up to
# the image's spatial structure, needs no pass over the data, and lives inside
# the model, so the SavedModel stays self-contained. For other data they are
# a close-enough centring (the BatchNorm after the first convolution removes
# any remaining per-channel offset); images with other than 3 channels get
# the channels' averages.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

# BatchNorm as in the Torch and Caffe implementations of the paper's time:
# moving averages with momentum 0.9 (Torch's 0.1) and epsilon 1e-5. Keras's
# 0.99 would need ~500 steps to forget the initial statistics, longer than a
# short run's epoch, and evaluation would use stale ones.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


class ShortcutA(layers.Layer):
  """The paper's option A shortcut where a block widens: subsample, then zero-pad channels.

  Identity shortcuts add no parameters, which is why ResNet-20 has 0.27M
  (He et al. 2015, sec. 4.2: "all shortcuts are identity"; sec. 3.3 (A):
  "extra zero entries padded for increasing dimensions").
  """

  def __init__(self, filters: int, stride: int, **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.stride = stride

  def call(self, x):
    x = x[:, ::self.stride, ::self.stride, :]
    extra = self.filters - x.shape[-1]
    # Split between both ends, as the reference implementations do; where the
    # zeros go does not matter to the convolutions that follow.
    return keras.ops.pad(x, [[0, 0], [0, 0], [0, 0], [extra // 2, extra - extra // 2]])

  def compute_output_shape(self, input_shape):
    n, h, w, _ = input_shape
    down = lambda d: None if d is None else -(-d // self.stride)  # ceil, as x[::stride]
    return (n, down(h), down(w), self.filters)

  def get_config(self):
    return {**super().get_config(), "filters": self.filters, "stride": self.stride}


def _conv_bn(x, filters: int, stride: int, name: str, policy: str, relu: bool = True):
  # No conv bias: the BatchNorm's beta that follows is the offset. He-normal
  # initialisation, as the paper's (its ref. [13], He et al. 2015 "Delving deep").
  x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                    kernel_initializer="he_normal", dtype=policy, name=f"{name}_conv")(x)
  # synchronized=True: under MirroredStrategy and MultiWorkerMirroredStrategy
  # the batch statistics are those of the global batch, all-reduced across
  # replicas (3 small all-reduces per layer and step). Two reasons:
  # * Keras 3 keeps BatchNorm's moving statistics as mirrored variables with
  #   no aggregation, so with per-replica statistics each replica assigns its
  #   own values and the copies diverge (measured: 2 replicas, 2 different
  #   moving means); the export and the checkpoint would then keep replica
  #   0's, and workers' weights would differ. Global statistics are the same
  #   on every replica, so every copy gets the same update.
  # * The recipe's batch of 128 then normalises over 128 images whatever the
  #   number of workers; per-replica statistics over 16 images (8 workers)
  #   are noisy enough to cost accuracy (Wu & He, "Group Normalization", 2018).
  # Under XLA on GPUs the all-reduces compile into the step (TF's
  # MirroredStrategy uses collective ops there); without a strategy they are
  # the identity.
  x = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, synchronized=True,
                                dtype=policy, name=f"{name}_bn")(x)
  return layers.ReLU(dtype=policy, name=f"{name}_relu")(x) if relu else x


def _basic_block(x, filters: int, stride: int, name: str, policy: str):
  """Two 3x3 conv-BN layers and a shortcut: relu(F(x) + shortcut(x))."""
  shortcut = x
  if stride != 1 or x.shape[-1] != filters:
    shortcut = ShortcutA(filters, stride, dtype=policy, name=f"{name}_shortcut")(x)
  y = _conv_bn(x, filters, stride, f"{name}_1", policy)
  y = _conv_bn(y, filters, 1, f"{name}_2", policy, relu=False)
  y = layers.Add(dtype=policy, name=f"{name}_add")([y, shortcut])
  return layers.ReLU(dtype=policy, name=f"{name}_out")(y)


def resnet20(image_shape: tuple[int, int, int], num_classes: int,
             dtype_policy: Optional[str] = None, pixel_scale: float = 1.0 / 255,
             pixel_offset: float = 0.0) -> keras.Model:
  """ResNet-20 for CIFAR-sized images (He et al. 2015, "Deep Residual Learning
  for Image Recognition", sec. 4.2): 6n+2 layers with n = 3.

  A 3x3 conv of 16 filters, then three stages of n basic blocks with 16, 32
  and 64 filters (stride 2 at the first block of the second and third),
  global average pooling and a dense layer to the logits. BatchNorm after
  every convolution; identity shortcuts, zero-padded where the width grows.

  269,722 trainable parameters on 32x32x3 with 10 classes (the paper's
  0.27M), plus 1,376 non-trainable BatchNorm moving statistics.

  Args:
    image_shape: (H, W, C) of the uint8 input; any size of at least 4x4
      (global pooling makes the head size-independent).
    num_classes: width of the logits layer.
    dtype_policy: a Keras dtype policy for the hidden layers, e.g.
      "mixed_bfloat16"; the logits are float32, as in `tutorial_cnn`.
    pixel_scale, pixel_offset: the first layer's x * scale + offset on the
      uint8 pixels (models.PIXEL_RANGES). The per-channel standardisation
      after it is stated in the same units, so its output, and what the
      network learns, do not depend on them.

  Returns:
    A Keras model mapping uint8 images to float32 logits.
  """
  policy = dtype_policy or "float32"
  channels = image_shape[-1]
  mean = CIFAR10_MEAN if channels == 3 else (sum(CIFAR10_MEAN) / 3,) * channels
  std = CIFAR10_STD if channels == 3 else (sum(CIFAR10_STD) / 3,) * channels
  # CIFAR10_MEAN and _STD are of pixels / 255: restated in the rescaled units.
  mean = tuple(m * 255 * pixel_scale + pixel_offset for m in mean)
  std = tuple(s * 255 * pixel_scale for s in std)
  inputs = keras.Input(shape=image_shape, dtype="uint8", name="images")
  x = layers.Rescaling(pixel_scale, offset=pixel_offset, dtype=policy, name="rescale")(inputs)
  x = layers.Normalization(mean=mean, variance=[s * s for s in std], dtype=policy,
                           name="normalize")(x)
  x = _conv_bn(x, 16, 1, "stem", policy)
  for stage, filters in enumerate((16, 32, 64), start=1):
    for block in range(1, 4):
      stride = 2 if stage > 1 and block == 1 else 1
      x = _basic_block(x, filters, stride, f"stage{stage}_block{block}", policy)
  x = layers.GlobalAveragePooling2D(dtype=policy, name="pool")(x)
  logits = layers.Dense(num_classes, dtype="float32", name="logits")(x)
  return keras.Model(inputs, logits, name="resnet20")
