"""Training recipes compared by final test accuracy, on the photo crops, in-process.

  python bench/recipes.py    # ~12 minutes on 2 CPU cores
  python bench/recipes.py --seeds 42 "epochs=7" "epochs=8 learning_rate=0.001"

Each recipe is a set of trainer config overrides of the default preset
("epochs=7 lr_scaling=linear"). Every recipe trains with `trainer.training.train.run`
on bench/photos.py's 50,000 / 10,000 images held in memory (the same arrays
for every run, so only the recipe and the seed differ), once per seed, and
prints its test accuracy after every epoch and at the end.

This is how the default preset's epochs and learning rate were chosen: the
fewest epochs whose final accuracy matches the tutorial's 10-epoch figure on
the same images (bench/end_to_end.py prints it; 0.750 on the AVX-512 machine
of docs/performance.md). In-memory arrays: the timings printed are
not the real input path's, which bench/end_to_end.py measures.
"""

import argparse
import logging
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (sets up sys.path and TF logging)
import photos  # noqa: E402
from time_to_accuracy import project_run  # noqa: E402

# Overrides of today's preset, so the earlier recipes pin what has changed
# since they were measured (docs/performance.md's table): the 0.3-epoch warm-up
# and 2e-3 came with the real-CIFAR-10 recipe; before it, no warm-up.
DEFAULT_RECIPES = (
    "epochs=8 learning_rate=0.001 warmup_epochs=0",  # 0.1's recipe (1.41e-3 at batch 64), 8 epochs
    "epochs=7 learning_rate=0.001 warmup_epochs=0",
    "epochs=7 learning_rate=0.001 warmup_epochs=0 label_smoothing=0.1",
    "epochs=7 learning_rate=0.001 warmup_epochs=0 lr_scaling=linear",  # 2e-3 at batch 64
    "epochs=6 learning_rate=0.001 warmup_epochs=0 lr_scaling=linear",
    # The default preset before the real-CIFAR-10 recipe: 1.5e-3 at batch 32, 2.1e-3 at batch 64.
    "epochs=7 learning_rate=0.0015 warmup_epochs=0",
    "epochs=6",  # the default preset now: 2e-3 at batch 32 (2.83e-3 at 64), warm-up 0.3 epochs
)


def parse(recipe: str) -> dict:
  """"epochs=7 lr_scaling=linear" -> {"epochs": 7, "lr_scaling": "linear"}."""
  overrides = {}
  for item in recipe.split():
    key, _, value = item.partition("=")
    for kind in (int, float):
      try:
        overrides[key] = kind(value)
        break
      except ValueError:
        continue
    else:
      overrides[key] = value
  return overrides


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("recipes", nargs="*", default=DEFAULT_RECIPES,
                      help="config overrides, one quoted string per recipe.")
  parser.add_argument("--seeds", default="42,43", help="comma-separated seeds (default: 42,43).")
  args = parser.parse_args()
  from trainer import presets  # pylint: disable=import-outside-toplevel
  from trainer.data import pipeline as data  # pylint: disable=import-outside-toplevel
  logging.getLogger().setLevel(logging.WARNING)

  print(f"machine: {common.machine()}")
  print(f"cpu: {common.cpu()}")
  train, test = photos.make_arrays(50000, True, seed=0), photos.make_arrays(10000, False, seed=1)
  info = data.DatasetInfo("cifar10", (32, 32, 3), photos.CLASS_NAMES, 50000, 10000)
  source = data.ArraySource(info, train, test)
  seeds = [int(s) for s in args.seeds.split(",")]
  for recipe in args.recipes:
    overrides = parse(recipe)
    epochs = overrides.pop("epochs", presets.preset("cifar10").epochs)
    finals = []
    for seed in seeds:
      start = time.perf_counter()
      _, curve = project_run(source, epochs, 1.0, seed=seed, **overrides)
      finals.append(curve[-1])
      print(f"{recipe:50s} seed {seed}: {' '.join(f'{a:.3f}' for a in curve)}   "
            f"({time.perf_counter() - start:.0f} s in-process)")
      sys.stdout.flush()
    print(f"{recipe:50s} final accuracy: median {statistics.median(finals):.3f}, "
          f"min {min(finals):.3f}, max {max(finals):.3f}")


if __name__ == "__main__":
  main()
