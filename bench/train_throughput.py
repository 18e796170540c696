"""Training throughput: this project's trainer against the tutorial's own loop.

  python bench/train_throughput.py           # ~4 minutes on 2 CPU cores
  python bench/train_throughput.py --quick   # ~1 minute

Baseline: the TensorFlow CNN tutorial as written: the same model, Adam,
`model.fit` on float NumPy arrays (pixels / 255) at batch 32.
Project: `trainer.training.train.run` with the default preset (global batch 64 with
the sqrt learning-rate rule, a cached uint8 tf.data pipeline, several steps
per compiled call, XLA only where it helps).

Both train on the same CIFAR-10-shaped data (learnable synthetic images), in
the same process, alternating tutorial / project round by round so machine
noise hits both. Compilation is excluded from both (each has a warm-up).

Also reported:
* the input pipeline alone (the project's tf.data train pipeline, no model),
  as a multiple of the project's training rate (target: >= 5x);
* peak RSS of a whole training run of each, measured in a child process.
"""

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (sets up sys.path and TF logging)

import numpy as np  # noqa: E402
from tutorial import tutorial_model  # noqa: E402  (the tutorial's model, one definition)


def tutorial_images_per_sec(source, warm_model=None) -> tuple[float, object]:
  """One epoch of the tutorial's `fit` at batch 32; returns (images/s, model)."""
  images, labels = source._arrays[True]  # pylint: disable=protected-access
  x = images / 255.0  # as the tutorial does: float64 arrays, cast by Keras
  model = warm_model or tutorial_model()
  if warm_model is None:
    model.fit(x[:320], labels[:320], epochs=1, batch_size=32, verbose=0)  # compile
  start = time.perf_counter()
  model.fit(x, labels, epochs=1, batch_size=32, verbose=0)
  return len(x) / (time.perf_counter() - start), model


def project_images_per_sec(source, **overrides) -> float:
  from trainer import presets  # pylint: disable=import-outside-toplevel
  from trainer.training import train  # pylint: disable=import-outside-toplevel
  config = presets.preset("cifar10", epochs=1, job_dir=tempfile.mkdtemp(prefix="bench-"),
                             log_every_steps=10**6, **overrides)
  return train.run(config, datasets=source)["train_images_per_sec"]


def pipeline_images_per_sec(source, seconds: float = 5.0, **overrides) -> float:
  """The project's training input pipeline alone: batches drawn as fast as it delivers."""
  from trainer import presets  # pylint: disable=import-outside-toplevel
  from trainer.data import pipeline as data  # pylint: disable=import-outside-toplevel
  config = presets.preset("cifar10", **overrides)
  iterator = iter(data.train_dataset(source, config))
  for _ in range(20):  # fill the cache and the prefetch buffer
    next(iterator)
  images, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    images += int(next(iterator)[0].shape[0])
  return images / (time.perf_counter() - start)


def child(kind: str, examples: int) -> None:
  """One whole training run, for the parent to read this process's peak RSS."""
  logging.disable(logging.WARNING)
  source = common.cifar_like_source(examples, 256)
  if kind == "tutorial":
    tutorial_images_per_sec(source)
  else:
    project_images_per_sec(source)


def peak_rss_mb(kind: str, examples: int) -> float:
  proc = subprocess.Popen([sys.executable, __file__, "--child", kind, "--examples", str(examples)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  _, status, usage = os.wait4(proc.pid, 0)
  if status:
    raise RuntimeError(f"{kind} child failed with status {status}")
  return usage.ru_maxrss / 1024  # Linux reports KiB


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rounds", type=int, default=5, help="tutorial/project pairs (default: 5).")
  parser.add_argument("--examples", type=int, default=12800, help="training images per epoch (default: 12800).")
  parser.add_argument("--quick", action="store_true", help="2 rounds of 6400 images, no memory runs.")
  parser.add_argument("--mixed-precision", default="off", choices=("off", "bfloat16", "float16"),
                      help="the project's --mixed-precision (default: off).")
  parser.add_argument("--child", choices=("tutorial", "project"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    return child(args.child, args.examples)
  if args.quick:
    args.rounds, args.examples = 2, 6400
  # Memory first, while this process is small: a child forked from a process
  # that already holds TensorFlow counts the parent's pages in its peak RSS.
  memory = {} if args.quick else {kind: peak_rss_mb(kind, args.examples)
                                  for kind in ("tutorial", "project")}
  logging.disable(logging.WARNING)

  source = common.cifar_like_source(args.examples, 256)
  project = dict(mixed_precision=args.mixed_precision)
  print(f"machine: {common.machine()}")
  print(f"data: {args.examples} CIFAR-10-shaped images per epoch; rounds: {args.rounds}")
  _, warm = tutorial_images_per_sec(source)  # warm-ups: compile both
  project_images_per_sec(source, **project)

  rows = []
  for r in range(args.rounds):
    t, _ = tutorial_images_per_sec(source, warm)
    p = project_images_per_sec(source, **project)
    rows.append((t, p))
    print(f"round {r + 1}: tutorial {t:6.0f} images/s   project {p:6.0f} images/s   ratio {p / t:.2f}")
  ratios = [p / t for t, p in rows]
  print(f"tutorial fit, batch 32:     {common.spread([t for t, _ in rows])} images/s")
  print(f"project, default preset:    {common.spread([p for _, p in rows])} images/s")
  print(f"throughput ratio project/tutorial: {common.spread(ratios)}   (target >= 1.5)")

  train_rate = float(np.median([p for _, p in rows]))
  for augment in (False, True):
    rate = pipeline_images_per_sec(source, augment=augment)
    print(f"input pipeline alone{' with --augment' if augment else ''}: {rate:8.0f} images/s = "
          f"{rate / train_rate:.1f}x the training rate   (target >= 5x)")

  for kind, mib in memory.items():
    print(f"peak RSS, whole training run ({kind}, {args.examples} images, default batch): {mib:.0f} MiB")


if __name__ == "__main__":
  main()
