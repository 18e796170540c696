"""Presets: the accuracy recipe trains stably on hard learnable data, the schedule is what it says, the README's offline run works."""

import glob
import json
import math
import os
import re
import subprocess
import sys

import pytest
import tensorflow as tf
from tensorflow.core.util import event_pb2

from conftest import NUM_TEST, NUM_TRAIN, REPO
from trainer import presets
from trainer.data import pipeline as data
from trainer.training import optimizer as optimizer_lib
from trainer.training import schedule
from trainer.data import synthetic
from trainer.training import train


def test_warmup_then_cosine_schedule():
  lr = schedule.LearningRate(peak=2e-3, warmup_steps=10, total_steps=110, cosine=True)
  values = [float(lr(step)) for step in range(110)]
  assert values[0] == pytest.approx(2e-4)               # (step + 1) / warmup of the peak
  assert values[9] == pytest.approx(2e-3)               # peak at the end of warm-up
  assert values[60] == pytest.approx(1e-3, rel=1e-3)    # half-way down the cosine
  assert values[109] < 1e-6 and min(values) >= 0
  assert all(a <= b for a, b in zip(values[:10], values[1:10]))
  assert all(a >= b for a, b in zip(values[10:], values[11:]))
  constant = schedule.LearningRate(peak=1e-3, warmup_steps=0, total_steps=100, cosine=False)
  assert [float(constant(s)) for s in (0, 50, 99)] == pytest.approx([1e-3] * 3)


@pytest.mark.parametrize("batch, scaling, expected", [
    (32, "sqrt", 1e-3), (128, "sqrt", 2e-3), (64, "sqrt", 1.41421356e-3),
    (128, "linear", 4e-3), (128, "none", 1e-3), (8, "linear", 2.5e-4)])
def test_learning_rate_follows_the_global_batch(batch, scaling, expected):
  """1e-3 at the reference batch of 32, scaled by hand-worked factors."""
  config = presets.preset("cifar10", batch_size=batch, lr_scaling=scaling, learning_rate=1e-3)
  assert config.effective_learning_rate() == pytest.approx(expected)


def test_smoke_preset_runs_on_the_readme_offline_data(tfds_dir, tmp_path):
  """Slices in percent: the synthetic default (2,000 / 500 images) is smaller than real CIFAR-10."""
  metrics = train.run(presets.preset("smoke", data_dir=tfds_dir, job_dir=str(tmp_path)))
  assert metrics["epochs"] == 1 and metrics["test_examples"] == 50
  assert metrics["global_step"] == 200 // 64
  assert metrics["export"]["version"] == 1


def _scalars(log_dir, tag):
  points = []
  for path in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
    for record in tf.data.TFRecordDataset(path):
      event = event_pb2.Event.FromString(record.numpy())
      points += [(event.step, float(tf.make_ndarray(v.tensor))) for v in event.summary.value if v.tag == tag]
  return points


# Harder than the fixtures' data (cue 0.4): at cue 0.15 the preset's first
# epoch ends near chance and its accuracy dips while the learning rate is high,
# so stability has something to prove (trainer/data/synthetic.py).
HARD_SIGNAL = 0.15


def _hard_source():
  info = data.DatasetInfo("cifar10", (32, 32, 3), synthetic.CLASS_NAMES["cifar10"], NUM_TRAIN, NUM_TEST)
  return data.ArraySource(
      info, synthetic.make_arrays(NUM_TRAIN, (32, 32, 3), seed=0, signal=HARD_SIGNAL),
      synthetic.make_arrays(NUM_TEST, (32, 32, 3), seed=1, signal=HARD_SIGNAL))


def test_cifar10_best_trains_stably(tmp_path, caplog):
  """The preset's recipe on hard learnable data: pixels in [-1, 1], augmentation, warm-up +
  cosine, weight decay and label smoothing. The data (2,000 / 500 images) are small, and the
  schedule runs 40 of the preset's 60 epochs: the same 2-epoch warm-up, then cosine to 0."""
  assert presets.preset("cifar10-best").epochs == 60
  # The preset's --mixed-precision auto: bfloat16 on CPUs with AVX512-BF16 or AMX, where it
  # is faster (here 19-23 s of wall time for the run instead of 25 s), float32 elsewhere. The
  # bounds below were measured both ways (AMX's bfloat16 kernels were not: no such CPU here;
  # the margins below are wide).
  config = presets.preset("cifar10-best", job_dir=str(tmp_path), epochs=40)
  assert config.mixed_precision == "auto"
  assert (config.pixel_range, config.augment, config.batch_size, config.lr_schedule, config.warmup_epochs,
          config.label_smoothing, config.weight_decay) == ("symmetric", True, 128, "cosine", 2.0, 0.1, 0.05)
  caplog.set_level("INFO", logger="trainer.training")
  metrics = train.run(config, datasets=_hard_source())

  evals = re.findall(r"Epoch \d+/40 done: eval loss (\S+), accuracy (\S+);", caplog.text)
  assert len(evals) == 40
  eval_loss = [float(loss) for loss, _ in evals]
  curve = [float(accuracy) for _, accuracy in evals]
  losses = [value for _, value in sorted(_scalars(os.path.join(tmp_path, "logs", "train"), "loss"))]
  assert all(math.isfinite(x) for x in eval_loss + losses + [metrics["test_loss"]]), (eval_loss, losses)
  # Every bound below has a margin over the measured spread (AMD EPYC Zen 5, 2 cores), each
  # run the training below with only the seed changed (pixels in [-1, 1]): in float32, 12
  # runs, --seed 42 and 0-4, each under ONEDNN_MAX_CPU_ISA=AVX2 and =AVX512_CORE (where
  # auto picks float32); in bfloat16, 10 runs, --seed 42 and 0-8, with the full instruction
  # set (AVX512-BF16, where auto picks bfloat16). Figures: float32, then bfloat16.
  # The first epoch, mostly warm-up, ends near chance (ln 10 = 2.30; first
  # logged loss 2.248-2.294; 2.248-2.297). Label smoothing 0.1 puts a floor of ~0.50 under
  # the loss; the run gets near it (last / first 0.236-0.243; 0.236-0.241; the highest of
  # the last 10 logged losses is 0.195-0.324 under the lowest of the first 5; 0.191-0.274).
  assert losses[0] > 2.0 and losses[-1] < 0.4 * losses[0], losses
  assert max(losses[-10:]) < min(losses[:5]), losses
  # Final accuracy: 0.992-1.000 (both); the last 10 epochs (annealed): worst 0.990; 0.992.
  # The bounds stay those measured with pixels in [0, 1] (22 runs: final
  # 0.956-0.982, last 10 epochs worst 0.954), which hold with more margin.
  assert metrics["test_accuracy"] >= 0.93, metrics
  assert min(curve[-10:]) >= 0.92, f"the annealed epochs should hold: {curve}"
  # While the learning rate is high accuracy may dip: from the 11th epoch on
  # the worst epoch was 0.980 in the 12 runs, 0.962 in the 10; with pixels in [0, 1] it dipped
  # to 0.806 here and to 0.758 on an Intel AMX machine, so a floor near those
  # is noise. Falling back to chance (0.1) is what instability looks like.
  assert min(curve[10:]) >= 0.6, f"accuracy fell back during training: {curve}"

  rates = [value for _, value in sorted(_scalars(os.path.join(tmp_path, "logs", "train"), "learning_rate"))]
  peak = 2e-3  # 1e-3 at batch 32, times sqrt(128 / 32) for the preset's batch of 128
  # Logged at epoch ends: the first point is half-way through the 2-epoch warm-up.
  assert rates[0] == pytest.approx(peak * 16 / 30, rel=0.01)
  assert max(rates) == pytest.approx(peak, rel=0.05) and rates[-1] < peak / 50


def test_readme_offline_command_trains(tmp_path):
  """The README's no-network line: synthetic data in TFDS format, then the default preset."""
  readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
  command = re.search(r"`(python -m trainer\.synthetic [^`]+)`", readme).group(1)
  assert command == ("python -m trainer.synthetic --dataset cifar10 --data-dir data && "
                     "python -m trainer.task --data-dir data --job-dir runs/synthetic")
  env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
         "PYTHONPATH": REPO}
  result = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = json.load(open(tmp_path / "runs" / "synthetic" / "metrics.json"))
  # The preset's 6 epochs at batch 64 on these data; 4 of them measured >= 0.978 in 30 runs
  # (test_job_scenarios).
  assert metrics["epochs"] == presets.preset("cifar10").epochs and metrics["test_accuracy"] >= 0.9
  assert os.path.isfile(tmp_path / "runs" / "synthetic" / "export" / "cifar10" / "1" / "saved_model.pb")


def test_step_schedule_divides_by_the_factor_at_each_boundary():
  lr = schedule.LearningRate(peak=0.1, warmup_steps=0, total_steps=100, cosine=False,
                             step_boundaries=[40, 60], step_factor=0.1)
  assert [float(lr(s)) for s in (0, 39, 40, 59, 60, 99)] == pytest.approx(
      [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_cifar10_resnet20_is_the_papers_recipe():
  """He et al. 2015, sec. 4.2: SGD, momentum 0.9, lr 0.1 at batch 128, L2 1e-4, lr / 10 at
  32k and 48k iterations, stop at 64k; flip and 4-pixel pad-and-crop augmentation."""
  config = presets.preset("cifar10-resnet20")
  config.validate()
  assert (config.model, config.optimizer, config.momentum, config.batch_size, config.weight_decay,
          config.augment, config.lr_schedule, config.lr_step_factor, config.warmup_epochs) == (
              "resnet20", "sgd", 0.9, 128, 1e-4, True, "step", 0.1, 0.0)
  assert config.effective_learning_rate() == 0.1
  steps_per_epoch = 50_000 // 128  # CIFAR-10's training split; the partial batch is dropped
  rate = optimizer_lib.learning_rate(config, steps_per_epoch)
  boundaries = rate.step_boundaries
  total = steps_per_epoch * config.epochs
  assert (steps_per_epoch, boundaries, total) == (390, (31_980, 47_970), 63_960)
  for ours, papers in zip((*boundaries, total), (32_000, 48_000, 64_000)):
    assert abs(ours - papers) / papers < 0.001
  assert [float(rate(s)) for s in (0, 31_979, 31_980, 47_970, total - 1)] == pytest.approx(
      [0.1, 0.1, 0.01, 0.001, 0.001])


def test_cifar10_resnet20_learns_in_a_few_epochs(tfds_dir, tmp_path):
  """The preset, shortened to 2 epochs at batch 64 (62 steps at lr 0.05 by the linear rule,
  / 10 half-way through the second) on the fixtures' learnable data: well above chance
  (10%), and exported.

  Measured over 20 runs in float32 (--seed 42, 0-8; ONEDNN_MAX_CPU_ISA=AVX2 and AVX512_CORE):
  two clusters, 0.56-0.65 and 0.84-1.0; --seed 42 alone gave 0.644 with AVX2 and 0.99 with
  AVX-512. And over 10 in bfloat16, which `--mixed-precision auto` computes in on CPUs with
  AVX512-BF16 (full instruction set, AMD EPYC Zen 5; the same seeds): 0.574-0.998, seed 42
  the worst. So the bar is 0.3 (worst 0.564), not the 0.6 that one run once suggested."""
  config = presets.preset("cifar10-resnet20", data_dir=tfds_dir, job_dir=str(tmp_path), epochs=2,
                             batch_size=64, lr_step_epochs=(1.5,), log_every_steps=5,
                             steps_per_execution=5)
  metrics = train.run(config)
  assert metrics["global_step"] == 2 * (NUM_TRAIN // 64)
  assert metrics["test_accuracy"] >= 0.3, metrics
  assert os.path.isfile(os.path.join(metrics["export"]["paths"][0], "saved_model.pb"))
