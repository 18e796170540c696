"""The CNN: the TensorFlow tutorial's model, taking raw uint8 pixels.

Scaling pixels to [0, 1] is the model's first layer rather than a data-pipeline
step, so the exported SavedModel takes images exactly as a client holds them
and training and serving cannot disagree about preprocessing.
"""

from __future__ import annotations

from typing import Optional

import keras
from keras import layers

# Mixed-precision choices (config.mixed_precision) to Keras dtype policies.
POLICIES = {"off": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def tutorial_cnn(image_shape: tuple[int, int, int], num_classes: int,
                 dtype_policy: Optional[str] = None) -> keras.Model:
  """The tutorial's CNN: Conv32-Pool-Conv64-Pool-Conv64-Dense64-Dense(logits).

  122,570 trainable parameters on 32x32x3 with 10 classes; 93,322 on 28x28x1.

  Args:
    image_shape: (H, W, C) of the uint8 input.
    num_classes: width of the logits layer.
    dtype_policy: a Keras dtype policy for the hidden layers, e.g.
      "mixed_bfloat16". The logits are always computed in float32: softmax
      and cross-entropy over bfloat16 logits lose the small differences
      that decide late-training updates.

  Returns:
    An unbuilt-optimiser Keras model mapping uint8 images to float32 logits.
  """
  policy = dtype_policy or "float32"
  inputs = keras.Input(shape=image_shape, dtype="uint8", name="images")
  x = layers.Rescaling(1.0 / 255, dtype=policy, name="rescale")(inputs)
  x = layers.Conv2D(32, 3, activation="relu", dtype=policy, name="conv1")(x)
  x = layers.MaxPooling2D(dtype=policy, name="pool1")(x)
  x = layers.Conv2D(64, 3, activation="relu", dtype=policy, name="conv2")(x)
  x = layers.MaxPooling2D(dtype=policy, name="pool2")(x)
  x = layers.Conv2D(64, 3, activation="relu", dtype=policy, name="conv3")(x)
  x = layers.Flatten(dtype=policy, name="flatten")(x)
  x = layers.Dense(64, activation="relu", dtype=policy, name="dense")(x)
  logits = layers.Dense(num_classes, dtype="float32", name="logits")(x)
  return keras.Model(inputs, logits, name="tutorial_cnn")


MODELS = {"tutorial": tutorial_cnn}


def create_model(name: str, image_shape: tuple[int, int, int], num_classes: int,
                 mixed_precision: str = "off") -> keras.Model:
  """Builds the model `name` (config.model) for the given data."""
  return MODELS[name](image_shape, num_classes, POLICIES[mixed_precision])
