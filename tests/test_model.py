"""The model is the tutorial's CNN exactly, taking raw uint8 pixels."""

import numpy as np
import pytest
import tensorflow as tf

from trainer import model as model_lib


@pytest.mark.parametrize("shape, params", [((32, 32, 3), 122_570), ((28, 28, 1), 93_322)])
def test_tutorial_parameter_counts(shape, params):
  model = model_lib.create_model("tutorial", shape, 10)
  assert model.count_params() == params
  assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == params


def test_layers_are_the_tutorials():
  model = model_lib.create_model("tutorial", (32, 32, 3), 10)
  convs = [l for l in model.layers if l.__class__.__name__ == "Conv2D"]
  dense = [l for l in model.layers if l.__class__.__name__ == "Dense"]
  assert [l.filters for l in convs] == [32, 64, 64]
  assert all(l.kernel_size == (3, 3) for l in convs)
  assert [l.units for l in dense] == [64, 10]
  assert dense[-1].activation.__name__ == "linear"  # logits


def test_takes_uint8_and_scales_inside():
  model = model_lib.create_model("tutorial", (32, 32, 3), 10)
  assert model.inputs[0].dtype == "uint8"
  images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
  # The model divides by 255 itself, so clients send pixels as they are.
  import keras
  scaled = keras.Model(model.inputs, model.get_layer("rescale").output)([images])
  np.testing.assert_allclose(scaled.numpy(), images / 255.0, rtol=1e-6)
  assert model(images).shape == (2, 10)


@pytest.mark.parametrize("precision, compute", [("bfloat16", "bfloat16"), ("float16", "float16")])
def test_mixed_precision_keeps_logits_and_variables_float32(precision, compute):
  model = model_lib.create_model("tutorial", (32, 32, 3), 10, precision)
  assert model.get_layer("conv1").compute_dtype == compute
  assert model.get_layer("logits").compute_dtype == "float32"
  assert all(v.dtype == "float32" for v in model.trainable_variables)
  logits = model(np.zeros((1, 32, 32, 3), np.uint8))
  assert logits.dtype == tf.float32
