"""Distribution overhead: one-worker MultiWorkerMirroredStrategy vs no strategy.

  python bench/distribution_overhead.py            # ~2 minutes on 2 CPU cores
  python bench/distribution_overhead.py --quick

Both variants train the same tutorial CNN through the project's own loop
(trainer.training.train.run) on the same in-memory CIFAR-shaped data, in the same
process, alternating A B A B. The strategy is injected, so the difference
is the tf.distribute machinery alone: MWMS (one worker, a real gRPC server on
127.0.0.1, RING collectives) against the default strategy. Reported: training
images/s of each (compilation excluded) and the per-pair ratio MWMS / default.
Target: overhead (1 - ratio) of 10% or less.
"""

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (sets up sys.path and TF logging)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rounds", type=int, default=5, help="A/B pairs (default: 5).")
  parser.add_argument("--examples", type=int, default=12800, help="Training images per run (default: 12800).")
  parser.add_argument("--quick", action="store_true", help="2 rounds of 3200 images.")
  args = parser.parse_args()
  if args.quick:
    args.rounds, args.examples = 2, 3200

  # MultiWorkerMirroredStrategy must exist before TensorFlow runs any op.
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}"]},
                                        "task": {"type": "worker", "index": 0}})
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  mwms = tf.distribute.MultiWorkerMirroredStrategy()
  default = tf.distribute.get_strategy()
  del os.environ["TF_CONFIG"]  # train.run must not build its own strategy from it

  from trainer import presets  # pylint: disable=import-outside-toplevel
  from trainer.training import train  # pylint: disable=import-outside-toplevel
  import logging  # pylint: disable=import-outside-toplevel
  logging.disable(logging.WARNING)

  source = common.cifar_like_source(args.examples, 256)

  def images_per_sec(strategy) -> float:
    config = presets.preset("cifar10", epochs=1, job_dir=tempfile.mkdtemp(prefix="bench-"),
                               log_every_steps=10**6)
    return train.run(config, strategy=strategy, datasets=source)["train_images_per_sec"]

  print(f"machine: {common.machine()}")
  print(f"data: {args.examples} CIFAR-shaped images per run, tutorial CNN, default preset "
        f"(batch {presets.preset('cifar10').batch_size})")
  images_per_sec(default)  # warm-up: imports, first tf.data and XLA work
  rows = []
  for r in range(args.rounds):
    a = images_per_sec(mwms)
    b = images_per_sec(default)
    rows.append((a, b, a / b))
    print(f"round {r + 1}: MWMS {a:7.0f} images/s   default {b:7.0f} images/s   ratio {a / b:.3f}")
  ratios = [r[2] for r in rows]
  print(f"MWMS images/s:    {common.spread([r[0] for r in rows])}")
  print(f"default images/s: {common.spread([r[1] for r in rows])}")
  print(f"ratio MWMS/default: {common.spread(ratios)}")
  overhead = 1 - statistics.median(ratios)
  print(f"distribution overhead: {overhead:+.1%} (target: <= 10%)")


if __name__ == "__main__":
  main()
