"""Writes learnable synthetic data in TFDS format, for a run without network access.

  python -m trainer.synthetic --dataset cifar10 --data-dir /tmp/tfds
  python -m trainer.task --dataset cifar10 --data-dir /tmp/tfds --preset smoke

The data itself is trainer/data/synthetic.py's.
"""

from __future__ import annotations

import argparse
from typing import Optional

from trainer.data import synthetic


def main(argv: Optional[list[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--dataset", default="cifar10", help="TFDS name to imitate (default: cifar10).")
  parser.add_argument("--data-dir", required=True, help="TFDS data_dir to write into (local or gs://).")
  parser.add_argument("--num-train", type=int, default=2000, help="Training examples (default: 2000).")
  parser.add_argument("--num-test", type=int, default=500, help="Test examples (default: 500).")
  args = parser.parse_args(argv)
  print(synthetic.write_tfds(args.dataset, args.data_dir, args.num_train, args.num_test))


if __name__ == "__main__":
  main()
