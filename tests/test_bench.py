"""The end-to-end benchmark runs from a checkout and reports what docs/performance.md quotes.

The figures themselves are measured by `python bench/end_to_end.py`, never
asserted here (timings in tests are noise); this only keeps the benchmark
working: both input paths written to disk, the tutorial and trainer.task run
as whole processes, and the CPU named with its vector extensions.
"""

import os
import re
import subprocess
import sys

from trainer import environment
from trainer.training import precision

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _without_real_data() -> dict:
  """This process's environment without CIFAR10_IMAGES (real CIFAR-10 stays out of the tests),
  nor the TF_ENABLE_ONEDNN_OPTS conftest sets: each process chooses its kernels as a user's."""
  return {k: v for k, v in os.environ.items() if k not in ("CIFAR10_IMAGES", "TF_ENABLE_ONEDNN_OPTS")}


def test_end_to_end_benchmark_runs_both_input_paths_as_whole_processes(tmp_path):
  out = subprocess.run(
      [sys.executable, os.path.join(REPO, "bench", "end_to_end.py"), "--examples", "400",
       "--test-examples", "100", "--data", "synthetic", "--epochs", "1",
       "--project-args=--epochs 1 --batch-size 32", "--work", str(tmp_path)],
      check=True, capture_output=True, text=True, timeout=600, env=_without_real_data()).stdout
  assert re.search(r"^cpu: .*; \d+ CPUs; vector extensions: .*\bsse4_2\b", out, re.M), out
  for path in ("tfds", "folder"):
    # Each process's kernels as it recorded them: the tutorial TensorFlow's default for the
    # CPU, the project oneDNN's on x86-64 (trainer/environment.py's prefer_onednn).
    project_kernels = "oneDNN" if environment.is_x86_64() else "oneDNN|TensorFlow's own kernels"
    assert re.search(rf"^{path} round 1: tutorial \d+ s .* accuracy [\d.]+ \((oneDNN|TensorFlow's "
                     rf"own kernels)\); project \d+ s, accuracy [\d.]+ \((float32|bfloat16), "
                     rf"({project_kernels})\); time ratio project/tutorial [\d.]+", out, re.M), out
    # Where the project's time went: its one epoch's evaluation, its exit, its training rate
    # (metrics.json records none for a run this short: no step after the first logged one).
    assert re.search(r"^   project's epochs evaluated at \d+ s, exit at \d+ s; training "
                     r"(\d+ images/s|rate not recorded)$", out, re.M), out
    assert re.search(rf"^{path}: whole-process time ratio project/tutorial median [\d.]+", out, re.M)
  # Both forms were written once, in the work folder, and are reused.
  assert len([n for n in os.listdir(tmp_path) if n.endswith(".done")]) == 1


def test_real_jpegs_give_both_input_paths_and_a_held_out_validation_split(tmp_path):
  """--cifar10-images with --validation: the held-out split comes from train, never test,
  and the catalog path gets the same images as a prepared `cifar10`."""
  sys.path.insert(0, os.path.join(REPO, "bench"))
  import end_to_end  # pylint: disable=import-outside-toplevel
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from trainer.data import synthetic  # pylint: disable=import-outside-toplevel
  images = tmp_path / "cifar10-images"
  names = list(synthetic.CLASS_NAMES["cifar10"])
  splits = {"train": synthetic.make_arrays(200, (32, 32, 3), 10, seed=0),
            "test": synthetic.make_arrays(50, (32, 32, 3), 10, seed=1)}
  synthetic.store_image_folder(str(images), splits, names)
  for path in images.rglob("*.png"):  # the real copy's layout: JPEG files
    path.rename(path.with_suffix(".jpg"))
  inputs = end_to_end.jpeg_data(str(tmp_path / "work"), str(images), True, held_out=40)

  held_out = tmp_path / "work" / "cifar10-jpeg-validation-40"
  assert inputs["folder"] == ["--dataset", f"folder:{held_out}"]
  linked = sorted(os.path.realpath(p) for p in (held_out / "test").rglob("*.jpg"))
  assert len(linked) == 40 and all("/train/" in p for p in linked)
  trained = {os.path.realpath(p) for p in (held_out / "train").rglob("*.jpg")}
  assert len(trained) == 160 and not trained & set(linked)
  data_dir = inputs["tfds"][inputs["tfds"].index("--data-dir") + 1]
  builder = tfds.builder("cifar10", data_dir=data_dir)
  assert (builder.info.splits["train"].num_examples, builder.info.splits["test"].num_examples) == (160, 40)
  assert builder.info.features["label"].names == sorted(names)


def test_precision_bench_compares_both_precisions_and_reports_a_refusal(tmp_path):
  """bench/precision.py at AVX2: float32 trains; bfloat16 is refused (exit 2) on an AVX-512 CPU
  capped there, and trains on an AVX2-only one (trainer/training/precision.py says why)."""
  out = subprocess.run(
      [sys.executable, os.path.join(REPO, "bench", "precision.py"), "--data", "synthetic", "--examples", "400",
       "--test-examples", "100", "--isa", "AVX2", "--project-args=--epochs 2 --batch-size 32",
       "--work", str(tmp_path)],
      check=True, capture_output=True, text=True, timeout=600, env=_without_real_data()).stdout
  assert "AVX2: auto picks float32 (auto on a CPU without native bfloat16 (AVX2): float32)" in out
  if precision.onednn_takes_bfloat16(precision.cpu_flags()):
    assert re.search(r"round 1: float32 \d+ images/s, accuracy [\d.]+; bfloat16 refused: error: "
                     r"--mixed-precision bfloat16 cannot run on this CPU with oneDNN at AVX2", out), out
  else:
    assert re.search(r"round 1: float32 \d+ images/s, \d+ s, accuracy [\d.]+; bfloat16 \d+ images/s", out), out


def test_a_git_clone_of_the_jpegs_gives_the_tutorial_ten_classes(tmp_path):
  """The images as `git clone` leaves them (a .git folder beside train/ and test/): both
  programs read only the two splits, so the prepared `cifar10` has the 10 classes."""
  sys.path.insert(0, os.path.join(REPO, "bench"))
  import end_to_end  # pylint: disable=import-outside-toplevel
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from trainer.data import synthetic  # pylint: disable=import-outside-toplevel
  images = tmp_path / "CIFAR-10-images"
  names = list(synthetic.CLASS_NAMES["cifar10"])
  synthetic.store_image_folder(str(images), {"train": synthetic.make_arrays(40, (32, 32, 3), 10, seed=0),
                                             "test": synthetic.make_arrays(20, (32, 32, 3), 10, seed=1)},
                               names)
  for sub in ("objects/00", "objects/ff", "refs/heads", "hooks", "info", "logs/refs"):
    (images / ".git" / sub).mkdir(parents=True)
  (images / "README.md").write_text("# CIFAR-10 images\n")
  inputs = end_to_end.jpeg_data(str(tmp_path / "work"), str(images), False)

  folder = inputs["folder"][1][len("folder:"):]
  assert sorted(os.listdir(folder)) == ["test", "train"]
  assert os.path.realpath(os.path.join(folder, "train")) == str(images / "train")
  data_dir = inputs["tfds"][inputs["tfds"].index("--data-dir") + 1]
  builder = tfds.builder("cifar10", data_dir=data_dir)
  assert builder.info.features["label"].names == sorted(names)
  assert (builder.info.splits["train"].num_examples, builder.info.splits["test"].num_examples) == (40, 20)
