"""The models behind --model, each taking raw uint8 pixels and returning float32 logits.

  cnn      --model tutorial: the TensorFlow tutorial's CNN, 122,570 parameters on CIFAR-10
  resnet   --model resnet20: ResNet-20 of He et al. 2015, 269,722 trainable parameters

Scaling pixels (to [0, 1], or to [-1, 1]: `PIXEL_RANGES`) is each model's first
layer rather than a data-pipeline step, so the exported SavedModel takes images exactly as a client holds them
and training and serving cannot disagree about preprocessing. This module is
the registry (`create_model`); it may import nothing else of the trainer.
"""

from __future__ import annotations

import math

import keras

from trainer.models import cnn
from trainer.models import resnet

# Mixed-precision choices (config.mixed_precision) to Keras dtype policies.
POLICIES = {"off": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}

MODELS = {"tutorial": cnn.tutorial_cnn, "resnet20": resnet.resnet20}

# Pixel ranges (config.pixel_range) to the (scale, offset) of each model's first
# layer, a Rescaling of the uint8 pixels: x * scale + offset. "unit" is the
# tutorial's x / 255. "symmetric" centres the inputs on 0, which conditions the
# first layer's gradients better in a network without normalisation (LeCun et
# al., "Efficient BackProp", 1998, sec. 4.3); it adds no parameter.
PIXEL_RANGES = {"unit": (1.0 / 255, 0.0), "symmetric": (1.0 / 127.5, -1.0)}


def create_model(name: str, image_shape: tuple[int, int, int], num_classes: int,
                 mixed_precision: str = "off", pixel_range: str = "unit") -> keras.Model:
  """Builds the model `name` (config.model) for the given data."""
  scale, offset = PIXEL_RANGES[pixel_range]
  return MODELS[name](image_shape, num_classes, POLICIES[mixed_precision], scale, offset)


def pixel_range_of(model: keras.Model) -> str:
  """The `PIXEL_RANGES` name of a model's first layer: what a copy for serving must use.

  Raises:
    ValueError: if the model's "rescale" layer matches none of them.
  """
  layer = model.get_layer("rescale")
  for name, (scale, offset) in PIXEL_RANGES.items():
    if math.isclose(float(layer.scale), scale) and math.isclose(float(layer.offset), offset, abs_tol=1e-12):
      return name
  raise ValueError(f"the model's rescale layer (scale {layer.scale}, offset {layer.offset}) "
                   f"is none of {sorted(PIXEL_RANGES)}")
