"""The models behind --model, each taking raw uint8 pixels and returning float32 logits.

  cnn      --model tutorial: the TensorFlow tutorial's CNN, 122,570 parameters on CIFAR-10
  resnet   --model resnet20: ResNet-20 of He et al. 2015, 269,722 trainable parameters

Scaling pixels to [0, 1] is each model's first layer rather than a data-pipeline
step, so the exported SavedModel takes images exactly as a client holds them
and training and serving cannot disagree about preprocessing. This module is
the registry (`create_model`); it may import nothing else of the trainer.
"""

from __future__ import annotations

import keras

from trainer.models import cnn
from trainer.models import resnet

# Mixed-precision choices (config.mixed_precision) to Keras dtype policies.
POLICIES = {"off": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}

MODELS = {"tutorial": cnn.tutorial_cnn, "resnet20": resnet.resnet20}


def create_model(name: str, image_shape: tuple[int, int, int], num_classes: int,
                 mixed_precision: str = "off") -> keras.Model:
  """Builds the model `name` (config.model) for the given data."""
  return MODELS[name](image_shape, num_classes, POLICIES[mixed_precision])
