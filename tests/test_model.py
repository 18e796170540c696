"""The models behind --model: the tutorial's CNN exactly, and the ResNet paper's ResNet-20; both take raw uint8 pixels."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer import models as model_lib
from trainer.models import resnet

MODELS = ("tutorial", "resnet20")


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


def _resnet20_trainable_parameters(channels, classes):
  """He et al. 2015, sec. 4.2, counted by hand: 3x3 kernels without biases, a
  BatchNorm gamma and beta per output channel, identity shortcuts (none)."""
  conv = lambda c_in, c_out: 3 * 3 * c_in * c_out + 2 * c_out
  stem = conv(channels, 16)
  stage1 = 3 * (conv(16, 16) + conv(16, 16))
  stage2 = conv(16, 32) + conv(32, 32) + 2 * (conv(32, 32) + conv(32, 32))
  stage3 = conv(32, 64) + conv(64, 64) + 2 * (conv(64, 64) + conv(64, 64))
  return stem + stage1 + stage2 + stage3 + 64 * classes + classes


@pytest.mark.parametrize("shape", [(32, 32, 3), (28, 28, 1)])
def test_resnet20_parameter_count_is_the_papers(shape):
  model = model_lib.create_model("resnet20", shape, 10)
  trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
  assert trainable == _resnet20_trainable_parameters(shape[2], 10)
  if shape == (32, 32, 3):
    assert trainable == 269_722 and round(trainable / 1e6, 2) == 0.27  # the paper's Table 6
  # BatchNorm's moving mean and variance: 19 layers of 16 (7), 32 (6), 64 (6) channels.
  assert model.count_params() - trainable == 2 * (7 * 16 + 6 * 32 + 6 * 64) == 1376
  assert all(not v.trainable for v in model.non_trainable_weights)


def test_resnet20_layers_are_the_papers():
  model = model_lib.create_model("resnet20", (32, 32, 3), 10)
  convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
  assert len(convs) + 1 == 20  # 19 convolutions and the dense layer
  assert [l.filters for l in convs] == [16] * 7 + [32] * 6 + [64] * 6
  assert all(l.kernel_size == (3, 3) and not l.use_bias for l in convs)
  assert [l.name for l in convs if l.strides == (2, 2)] == ["stage2_block1_1_conv", "stage3_block1_1_conv"]
  assert len([l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]) == 19
  # Option A: parameter-free shortcuts where the width grows, identity elsewhere.
  shortcuts = [l for l in model.layers if isinstance(l, resnet.ShortcutA)]
  assert [l.name for l in shortcuts] == ["stage2_block1_shortcut", "stage3_block1_shortcut"]
  assert all(not l.weights for l in shortcuts)
  assert isinstance(model.get_layer("pool"), keras.layers.GlobalAveragePooling2D)
  assert model.get_layer("logits").units == 10
  assert model.get_layer("logits").activation.__name__ == "linear"
  assert model.get_layer("stage3_block3_out").output.shape == (None, 8, 8, 64)


def test_shortcut_a_subsamples_and_pads_with_zeros():
  x = np.arange(2 * 4 * 4 * 2, dtype=np.float32).reshape(2, 4, 4, 2)
  y = resnet.ShortcutA(6, 2)(x).numpy()
  assert y.shape == (2, 2, 2, 6)
  np.testing.assert_array_equal(y[..., 2:4], x[:, ::2, ::2, :])
  assert not y[..., :2].any() and not y[..., 4:].any()


@pytest.mark.parametrize("name", MODELS)
def test_takes_uint8_and_scales_inside(name):
  model = model_lib.create_model(name, (32, 32, 3), 10)
  assert model.inputs[0].dtype == "uint8"
  assert model.layers[1].name == "rescale"
  images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
  # The model divides by 255 itself, so clients send pixels as they are.
  scaled = keras.Model(model.inputs, model.get_layer("rescale").output)([images])
  np.testing.assert_allclose(scaled.numpy(), images / 255.0, rtol=1e-6)
  assert model(images).shape == (2, 10)


def test_resnet20_normalises_channels_with_constants_inside_the_model():
  model = model_lib.create_model("resnet20", (32, 32, 3), 10)
  assert not model.get_layer("normalize").weights  # constants: nothing to train, save or restore
  images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
  normalised = keras.Model(model.inputs, model.get_layer("normalize").output)([images]).numpy()
  expected = (images / 255.0 - np.array(resnet.CIFAR10_MEAN)) / np.array(resnet.CIFAR10_STD)
  np.testing.assert_allclose(normalised, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("precision, compute", [("bfloat16", "bfloat16"), ("float16", "float16")])
def test_mixed_precision_keeps_logits_and_variables_float32(name, precision, compute):
  model = model_lib.create_model(name, (32, 32, 3), 10, precision)
  first_conv = next(l for l in model.layers if isinstance(l, keras.layers.Conv2D))
  assert first_conv.compute_dtype == compute
  assert model.get_layer("logits").compute_dtype == "float32"
  assert all(v.dtype == "float32" for v in model.weights)
  logits = model(np.zeros((1, 32, 32, 3), np.uint8))
  assert logits.dtype == tf.float32


def test_resnet20_batchnorm_statistics_are_the_global_batchs_on_every_replica():
  """Synchronised BatchNorm: each replica sees half the batch, yet every copy of the moving
  statistics gets the statistics of the whole batch (per-replica ones would diverge)."""
  # Reduced through one device rather than by collective ops, whose instance keys
  # collide with those of other tests' MirroredStrategy in this process.
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"],
                                            cross_device_ops=tf.distribute.ReductionToOneDevice())
  with strategy.scope():
    model = model_lib.create_model("resnet20", (8, 8, 3), 10)
  # Two halves with different brightness: per-replica statistics would differ.
  images = np.concatenate([np.full((4, 8, 8, 3), 40, np.uint8), np.full((4, 8, 8, 3), 200, np.uint8)])
  data = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(images))

  @tf.function
  def forward(batch):
    strategy.run(lambda x: model(x, training=True), args=(batch,))

  forward(next(iter(data)))
  bn = model.get_layer("stem_bn")
  copies = [v.numpy() for v in bn.moving_mean.value.values]
  assert len(copies) == 2
  np.testing.assert_array_equal(copies[0], copies[1])
  stem = keras.Model(model.input, model.get_layer("stem_conv").output)
  whole_batch_mean = stem(images).numpy().mean(axis=(0, 1, 2))
  # Momentum 0.9 from 0: one update moves the moving mean 10% of the way.
  np.testing.assert_allclose(copies[0], 0.1 * whole_batch_mean, rtol=1e-4, atol=1e-6)


def test_resnet20_refuses_xla_over_several_cpu_replicas():
  """There TensorFlow cannot compile the synchronised BatchNorm's all-reduce: a clear
  ConfigError instead of a RuntimeError from inside tf.function."""
  from trainer import errors  # pylint: disable=import-outside-toplevel
  from trainer import presets  # pylint: disable=import-outside-toplevel
  from trainer.training import steps  # pylint: disable=import-outside-toplevel
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  config = presets.preset("cifar10-resnet20", jit_compile="on")
  with strategy.scope():
    model = model_lib.create_model("resnet20", (8, 8, 3), 10)
  with pytest.raises(errors.ConfigError, match=r"--jit-compile on cannot compile --model resnet20 "
                                               r"over 2 CPU replicas.*--jit-compile auto or off"):
    steps.build(model, None, strategy, config, 10, None, None, None)


@pytest.mark.parametrize("pixel_range, lowest, highest", [("unit", 0.0, 1.0), ("symmetric", -1.0, 1.0)])
def test_the_first_layer_maps_pixels_to_the_configured_range_without_parameters(pixel_range, lowest, highest):
  model = model_lib.create_model("tutorial", (32, 32, 3), 10, pixel_range=pixel_range)
  rescale = keras.Model(model.input, model.get_layer("rescale").output)
  pixels = np.array([0, 255], dtype=np.uint8).reshape(1, 1, 2, 1).repeat(3, axis=-1).repeat(32, axis=1)
  pixels = np.pad(pixels, [(0, 0), (0, 0), (0, 30), (0, 0)])
  out = rescale(pixels).numpy()
  np.testing.assert_allclose(out[0, 0, :2, 0], [lowest, highest], atol=1e-6)
  assert model.count_params() == 122_570  # the same model: scaling adds no parameter
  assert model_lib.pixel_range_of(model) == pixel_range


def test_resnet20_standardises_the_same_whatever_the_pixel_range():
  """Its per-channel standardisation is restated in the rescaled units."""
  images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
  outputs = []
  for pixel_range in ("unit", "symmetric"):
    model = model_lib.create_model("resnet20", (32, 32, 3), 10, pixel_range=pixel_range)
    outputs.append(keras.Model(model.input, model.get_layer("normalize").output)(images).numpy())
  np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-5)


def test_resnet20_compiles_with_xla_on_one_replica():
  """One replica has nothing to all-reduce: under the default strategy (a single-process run)
  --jit-compile on compiles ResNet-20's forward and backward pass, and its steps train. (It
  raised RuntimeError: the default strategy has no worker_devices.)"""
  from trainer import presets  # pylint: disable=import-outside-toplevel
  from trainer.training import metrics as metrics_lib  # pylint: disable=import-outside-toplevel
  from trainer.training import steps  # pylint: disable=import-outside-toplevel
  strategy = tf.distribute.get_strategy()
  config = presets.preset("cifar10-resnet20", jit_compile="on", batch_size=8)
  model = model_lib.create_model("resnet20", (8, 8, 3), 10)
  optimizer = keras.optimizers.SGD(0.1)
  sums = metrics_lib.Sums(10, confusion=False)
  compiled = steps.build(model, optimizer, strategy, config, 10, sums, None, None)
  assert compiled.xla
  rng = np.random.default_rng(0)
  batches = tf.data.Dataset.from_tensors((rng.integers(0, 256, (8, 8, 8, 3), np.uint8),
                                          rng.integers(0, 10, (8,), np.int64))).repeat()
  before = [w.numpy() for w in model.trainable_weights]
  assert int(compiled.train_steps(iter(batches), tf.constant(2), tf.constant(0.0))) == 0
  assert int(optimizer.iterations.numpy()) == 2
  assert all(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights))
  assert float(sums.count.numpy()) == 16


@pytest.mark.parametrize("architecture", MODELS)
def test_the_smallest_image_side_config_allows_is_each_models_own(architecture):
  """config.MIN_IMAGE_SIZE is what the model takes: it builds and classifies images of that
  side, and the tutorial CNN, whose convolutions do not pad, refuses one pixel less."""
  from trainer import config as config_lib  # pylint: disable=import-outside-toplevel
  side = config_lib.MIN_IMAGE_SIZE[architecture]
  model = model_lib.create_model(architecture, (side, side, 3), 10)
  assert model(np.zeros((2, side, side, 3), np.uint8)).shape == (2, 10)
  if architecture == "tutorial":
    with pytest.raises(ValueError, match="output size would be zero or negative"):
      model_lib.create_model(architecture, (side - 1, side - 1, 3), 10)
