"""Time to accuracy: wall time until test accuracy first crosses a bar, project vs tutorial loop.

  python bench/time_to_accuracy.py           # ~4 minutes on 2 CPU cores
  python bench/time_to_accuracy.py --quick   # ~1 minute, small data
  python bench/time_to_accuracy.py --signal 0.15   # harder data

Both learn the same learnable CIFAR-10-shaped synthetic data (trainer.synthetic)
and evaluate on its test split after every epoch; the clock runs from before
the model is built (compilation included) until the first evaluation at or
above --bar. Tutorial: `model.fit(..., epochs=1, batch_size=32)` then
`model.evaluate` per epoch, as the tutorial's `validation_data` does.
Project: `trainer.training.train.run` with the default preset (its per-epoch
evaluation, checkpoint and TensorBoard writes included). Rounds alternate
tutorial / project; each round uses a fresh seed for both.

Also reported: final test accuracy of each after the same number of epochs
(no loss of accuracy at equal epochs).
"""

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (sets up sys.path and TF logging)
from train_throughput import tutorial_model  # noqa: E402


def tutorial_run(source, epochs: int, bar: float, seed: int):
  """Returns (seconds to reach `bar` or None, accuracy per epoch)."""
  import keras  # pylint: disable=import-outside-toplevel
  keras.utils.set_random_seed(seed)
  (x, y), (xt, yt) = source._arrays[True], source._arrays[False]  # pylint: disable=protected-access
  start = time.perf_counter()
  model = tutorial_model()
  x, xt = x / 255.0, xt / 255.0
  reached, curve = None, []
  for _ in range(epochs):
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    curve.append(model.evaluate(xt, yt, verbose=0)[1])
    if reached is None and curve[-1] >= bar:
      reached = time.perf_counter() - start
  return reached, curve


class _EpochLog(logging.Handler):
  """Collects (time, eval accuracy) from the trainer's end-of-epoch log line."""

  def __init__(self):
    super().__init__()
    self.points = []

  def emit(self, record):
    if record.msg.startswith("Epoch %d/%d done"):
      self.points.append((time.perf_counter(), record.args[3]))


def project_run(source, epochs: int, bar: float, seed: int, **overrides):
  from trainer import presets  # pylint: disable=import-outside-toplevel
  from trainer.training import train  # pylint: disable=import-outside-toplevel
  handler = _EpochLog()
  logger = logging.getLogger("trainer.training")
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  logger.propagate = False  # collect, do not print
  try:
    start = time.perf_counter()
    config = presets.preset("cifar10", epochs=epochs, seed=seed,
                               job_dir=tempfile.mkdtemp(prefix="bench-"), **overrides)
    train.run(config, datasets=source)
  finally:
    logger.removeHandler(handler)
    logger.propagate = True
  curve = [accuracy for _, accuracy in handler.points]
  reached = next((t - start for t, accuracy in handler.points if accuracy >= bar), None)
  return reached, curve


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rounds", type=int, default=3, help="tutorial/project pairs (default: 3).")
  # CIFAR-10's sizes: 50,000 training and 10,000 test images. On small data
  # the per-run start-up (tracing, ~1.5 s here) dominates instead of training.
  parser.add_argument("--examples", type=int, default=50000, help="training images (default: 50000).")
  parser.add_argument("--test-examples", type=int, default=10000, help="test images (default: 10000).")
  parser.add_argument("--epochs", type=int, default=3, help="epochs per run (default: 3).")
  parser.add_argument("--bar", type=float, default=0.95, help="test accuracy to reach (default: 0.95).")
  parser.add_argument("--quick", action="store_true", help="2 rounds, 8000 / 1000 images, 3 epochs.")
  parser.add_argument("--batch-size", type=int, help="the project's --batch-size (default: the preset's).")
  parser.add_argument("--signal", type=float, default=0.25,
                      help="class-cue strength of the synthetic data; lower is harder (default: 0.25).")
  args = parser.parse_args()
  if args.quick:
    args.rounds, args.examples, args.test_examples, args.epochs = 2, 8000, 1000, 3
  logging.getLogger().setLevel(logging.WARNING)

  print(f"machine: {common.machine()}")
  print(f"data: {args.examples} learnable CIFAR-10-shaped training images (cue strength "
        f"{args.signal}), {args.test_examples} test images; bar: test accuracy >= {args.bar}; "
        f"{args.epochs} epochs per run")
  ratios, finals = [], []
  for r in range(args.rounds):
    source = common.cifar_like_source(args.examples, args.test_examples, seed=10 * r,
                                      signal=args.signal)
    t, t_curve = tutorial_run(source, args.epochs, args.bar, seed=r)
    overrides = {"batch_size": args.batch_size} if args.batch_size else {}
    p, p_curve = project_run(source, args.epochs, args.bar, seed=r, **overrides)
    fmt = lambda s: "not reached" if s is None else f"{s:6.1f} s"  # noqa: E731
    print(f"round {r + 1}: tutorial {fmt(t)}  project {fmt(p)}"
          + (f"  speed-up {t / p:.2f}x" if t and p else ""))
    print(f"   accuracy per epoch: tutorial {' '.join(f'{a:.3f}' for a in t_curve)}")
    print(f"                       project  {' '.join(f'{a:.3f}' for a in p_curve)}")
    if t and p:
      ratios.append(t / p)
    finals.append((t_curve[-1], p_curve[-1]))
  if ratios:
    print(f"time-to-accuracy speed-up (tutorial time / project time): {common.spread(ratios)}   "
          "(target >= 2)")
  print(f"final accuracy after {args.epochs} epochs: tutorial median "
        f"{statistics.median(f[0] for f in finals):.3f}, project median "
        f"{statistics.median(f[1] for f in finals):.3f}")


if __name__ == "__main__":
  main()
