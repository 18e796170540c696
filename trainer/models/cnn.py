"""The TensorFlow tutorial's CNN (tensorflow/docs site/en/tutorials/images/cnn.ipynb).

122,570 trainable parameters on 32x32x3 with 10 classes; 93,322 on 28x28x1.
"""

from __future__ import annotations

from typing import Optional

import keras
from keras import layers


def tutorial_cnn(image_shape: tuple[int, int, int], num_classes: int,
                 dtype_policy: Optional[str] = None, pixel_scale: float = 1.0 / 255,
                 pixel_offset: float = 0.0) -> keras.Model:
  """The tutorial's CNN: Conv32-Pool-Conv64-Pool-Conv64-Dense64-Dense(logits).

  122,570 trainable parameters on 32x32x3 with 10 classes; 93,322 on 28x28x1.

  Args:
    image_shape: (H, W, C) of the uint8 input.
    num_classes: width of the logits layer.
    dtype_policy: a Keras dtype policy for the hidden layers, e.g.
      "mixed_bfloat16". The logits are always computed in float32: softmax
      and cross-entropy over bfloat16 logits lose the small differences
      that decide late-training updates.
    pixel_scale, pixel_offset: the first layer's x * scale + offset on the
      uint8 pixels (models.PIXEL_RANGES); the tutorial's x / 255 by default.

  Returns:
    An unbuilt-optimiser Keras model mapping uint8 images to float32 logits.
  """
  policy = dtype_policy or "float32"
  inputs = keras.Input(shape=image_shape, dtype="uint8", name="images")
  x = layers.Rescaling(pixel_scale, offset=pixel_offset, dtype=policy, name="rescale")(inputs)
  x = layers.Conv2D(32, 3, activation="relu", dtype=policy, name="conv1")(x)
  x = layers.MaxPooling2D(dtype=policy, name="pool1")(x)
  x = layers.Conv2D(64, 3, activation="relu", dtype=policy, name="conv2")(x)
  x = layers.MaxPooling2D(dtype=policy, name="pool2")(x)
  x = layers.Conv2D(64, 3, activation="relu", dtype=policy, name="conv3")(x)
  x = layers.Flatten(dtype=policy, name="flatten")(x)
  x = layers.Dense(64, activation="relu", dtype=policy, name="dense")(x)
  logits = layers.Dense(num_classes, dtype="float32", name="logits")(x)
  return keras.Model(inputs, logits, name="tutorial_cnn")
