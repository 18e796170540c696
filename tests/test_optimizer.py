"""The optimiser: --weight-decay 0 is plain Adam; above 0, kernels decay by lr * wd per step and biases do not."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer import presets
from trainer import errors
from trainer import models as model_lib
from trainer.training import optimizer as optimizer_lib
from trainer.training import train

# A constant learning rate of exactly LR: no warm-up, no decay, no batch scaling.
LR = 0.01


def _config(**overrides):
  values = dict(learning_rate=LR, lr_scaling="none", lr_schedule="constant", warmup_epochs=0.0,
                epochs=2)
  values.update(overrides)
  return presets.preset("cifar10", **values)


def _model(strategy, mixed_precision="off"):
  with strategy.scope():
    model = model_lib.create_model("tutorial", (32, 32, 3), 10, mixed_precision)
  # Biases start at 0, where decaying them would change nothing: make every
  # variable non-zero so that a decayed bias would show.
  rng = np.random.default_rng(0)
  model.set_weights([rng.normal(0.5, 0.1, w.shape).astype(w.dtype) for w in model.get_weights()])
  return model


def _apply(strategy, optimizer, model, grads, steps):
  @tf.function
  def step():
    def replica_step():
      optimizer.apply_gradients(zip([tf.constant(g) for g in grads], model.trainable_variables))
    strategy.run(replica_step)
  for _ in range(steps):
    step()


def _assert_same_updates(strategy, ours, ours_model, reference, reference_model):
  """Three steps of the same random gradients leave both models' weights equal, bit for bit."""
  rng = np.random.default_rng(1)
  grads = [rng.normal(0, 1, w.shape).astype(np.float32) for w in ours_model.get_weights()]
  _apply(strategy, ours, ours_model, grads, 3)
  _apply(strategy, reference, reference_model, grads, 3)
  for a, b in zip(ours_model.get_weights(), reference_model.get_weights()):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("replicas, mixed_precision", [(1, "off"), (2, "off"), (1, "float16")])
def test_weight_decay_shrinks_kernels_by_lr_times_wd_per_step_and_leaves_biases(replicas,
                                                                                 mixed_precision):
  """With zero gradients Adam moves nothing, so what changes is the decay alone."""
  strategy = (tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]) if replicas == 2
              else tf.distribute.get_strategy())
  wd, steps = 0.5, 3
  config = _config(weight_decay=wd, mixed_precision=mixed_precision)
  model = _model(strategy, mixed_precision)
  with strategy.scope():
    optimizer = optimizer_lib.create(config, 10, model.trainable_variables, mixed_precision)
  before = [v.numpy() for v in model.trainable_variables]
  _apply(strategy, optimizer, model, [np.zeros_like(w) for w in before], steps)
  for variable, old in zip(model.trainable_variables, before):
    expected = old * (1 - LR * wd) ** steps if variable.ndim > 1 else old
    np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, err_msg=variable.path)
  assert {v.path for v in optimizer_lib.decayed(model.trainable_variables)} == {
      f"{layer}/kernel" for layer in ("conv1", "conv2", "conv3", "dense", "logits")}


@pytest.mark.parametrize("mixed_precision", ["off", "bfloat16", "float16"])
def test_only_float16_gets_loss_scaling_which_scales_the_loss(mixed_precision):
  """float16 gradients underflow without loss scaling; Keras 3's base optimizer also has a
  scale_loss (it returns the loss unchanged), so a finite loss alone cannot show the wrapper."""
  model = _model(tf.distribute.get_strategy(), mixed_precision)
  optimizer = optimizer_lib.create(_config(mixed_precision=mixed_precision), 10,
                                   model.trainable_variables, mixed_precision)
  scaled = float(optimizer.scale_loss(tf.constant(1.0)))
  if mixed_precision == "float16":
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == 2.0 ** 15  # Keras's initial dynamic loss scale
  else:
    assert not isinstance(optimizer, keras.optimizers.LossScaleOptimizer) and scaled == 1.0


def test_weight_decay_zero_is_plain_adam():
  """The same gradients through --weight-decay 0 and keras Adam give the same weights, bit for bit."""
  strategy = tf.distribute.get_strategy()
  config = _config()
  ours_model, adam_model = _model(strategy), _model(strategy)
  ours = optimizer_lib.create(config, 10, ours_model.trainable_variables)
  assert type(ours) is keras.optimizers.Adam and ours.weight_decay is None
  adam = keras.optimizers.Adam(learning_rate=LR)
  adam.build(adam_model.trainable_variables)
  _assert_same_updates(strategy, ours, ours_model, adam, adam_model)


def test_weight_decay_follows_the_learning_rate_schedule():
  """Keras decays by the step's scheduled rate, so the decay warms up and anneals with it."""
  strategy = tf.distribute.get_strategy()
  wd = 0.5
  config = _config(weight_decay=wd, lr_schedule="cosine", warmup_epochs=1.0)
  model = _model(strategy)
  optimizer = optimizer_lib.create(config, 4, model.trainable_variables)  # 4 warm-up steps
  kernel = model.get_layer("conv1").kernel
  before = kernel.numpy()
  _apply(strategy, optimizer, model, [np.zeros(v.shape, np.float32) for v in model.trainable_variables], 2)
  # Steps 0 and 1 of the warm-up run at 1/4 and 2/4 of the peak rate.
  np.testing.assert_allclose(kernel.numpy(), before * (1 - LR / 4 * wd) * (1 - LR / 2 * wd), rtol=1e-5)


@pytest.mark.parametrize("value, want", [
    (-0.1, ">= 0"), (float("inf"), ">= 0"), (float("nan"), ">= 0"),
    (600.0, "below 1 / the peak learning rate (500)")])
def test_invalid_weight_decay_is_a_config_error(value, want):
  config = presets.preset("cifar10-best", weight_decay=value)  # peak lr 2e-3
  with pytest.raises(errors.ConfigError, match=r"--weight-decay .* is invalid: it must be "):
    config.validate()
  with pytest.raises(errors.ConfigError) as raised:
    config.validate()
  assert want in str(raised.value)


def test_a_run_with_weight_decay_resumes_from_its_checkpoint(tfds_dir, tmp_path, caplog):
  """AdamW adds no slot, so its checkpoint restores like Adam's; a second run trains epoch 2 on it."""
  config = presets.preset("cifar10", data_dir=tfds_dir, job_dir=str(tmp_path), batch_size=128,
                             epochs=1, weight_decay=0.05, log_every_steps=5, steps_per_execution=5)
  first = train.run(config)
  caplog.set_level("INFO", logger="trainer.training")
  second = train.run(dataclasses.replace(config, epochs=2))
  assert "Resuming from checkpoint" in caplog.text and "at epoch 2/2, step 0/15" in caplog.text
  assert second["global_step"] == 2 * first["global_step"] == 30
  assert second["export"]["version"] == 2


# --------------------------------------------------- --optimizer sgd (the ResNet recipe)


@pytest.mark.parametrize("replicas", [1, 2])
def test_sgd_weight_decay_is_l2_added_to_the_gradient_before_momentum(replicas):
  """Zero loss gradients: kernels follow m = 0.9 m - lr * wd * w, w += m (L2 through the
  momentum, as in the paper's Caffe/Torch SGD); 1-D variables (biases, BatchNorm) stay."""
  strategy = (tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]) if replicas == 2
              else tf.distribute.get_strategy())
  wd, momentum, steps = 0.5, 0.9, 3
  config = _config(optimizer="sgd", momentum=momentum, weight_decay=wd)
  model = _model(strategy)
  with strategy.scope():
    optimizer = optimizer_lib.create(config, 10, model.trainable_variables)
  before = [v.numpy() for v in model.trainable_variables]
  _apply(strategy, optimizer, model, [np.zeros_like(w) for w in before], steps)
  for variable, old in zip(model.trainable_variables, before):
    w, m = old.astype(np.float64), np.zeros_like(old, np.float64)
    for _ in range(steps if variable.ndim > 1 else 0):
      m = momentum * m - LR * wd * w
      w = w + m
    np.testing.assert_allclose(variable.numpy(), w, rtol=1e-5, err_msg=variable.path)
  # The decoupled form would have shrunk each kernel by (1 - LR * wd) per step: far less.
  kernel, old = model.get_layer("conv1").kernel.numpy(), before[0]
  assert np.abs(kernel - old * (1 - LR * wd) ** steps).max() > 1e-3


def test_sgd_without_weight_decay_is_keras_momentum_sgd():
  strategy = tf.distribute.get_strategy()
  config = _config(optimizer="sgd", momentum=0.9)
  ours_model, sgd_model = _model(strategy), _model(strategy)
  ours = optimizer_lib.create(config, 10, ours_model.trainable_variables)
  sgd = keras.optimizers.SGD(learning_rate=LR, momentum=0.9)
  sgd.build(sgd_model.trainable_variables)
  _assert_same_updates(strategy, ours, ours_model, sgd, sgd_model)


@pytest.mark.parametrize("overrides, message", [
    ({"momentum": 1.0}, r"--momentum 1.0 is invalid: it must be in \[0, 1\)"),
    ({"momentum": -0.1}, r"--momentum -0.1 is invalid"),
    ({"lr_step_factor": 1.5}, r"--lr-step-factor 1.5 is invalid: it must be in \(0, 1\)"),
    ({"lr_step_epochs": ()}, r"--lr-step-epochs \[\] is invalid: it must be one or more epochs "
                             r"with --lr-schedule step"),
    ({"lr_step_epochs": (123, 82)}, r"it must be increasing"),
    ({"epochs": 100}, r"--lr-step-epochs \[82.0, 123.0\] is invalid: it must be after "
                      r"--warmup-epochs \(0.0\) and before --epochs \(100\)"),
    ({"lr_schedule": "cosine"}, r"it must be empty unless --lr-schedule step \(it is cosine\)"),
])
def test_invalid_sgd_and_step_settings_are_config_errors(overrides, message):
  with pytest.raises(errors.ConfigError, match=message):
    presets.preset("cifar10-resnet20", **overrides).validate()
