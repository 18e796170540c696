"""Writes learnable synthetic data in TFDS format, for a run without network access.

  python -m trainer.synthetic --dataset cifar10 --data-dir /tmp/tfds
  python -m trainer.task --dataset cifar10 --data-dir /tmp/tfds --preset smoke

The data itself is trainer/data/synthetic.py's. Exit codes: 0 written, 1 an
unexpected failure, 2 bad input (an unknown or non-image dataset, a count
below 1, a --data-dir that cannot be written or already holds the dataset).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional

from trainer import environment
from trainer import errors


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m trainer.synthetic",
                                   description=__doc__.split("\n\n")[0],
                                   epilog="Exit codes: 0 written, 1 unexpected failure, 2 bad input.")
  parser.add_argument("--dataset", default="cifar10", help="TFDS name to imitate (default: cifar10).")
  parser.add_argument("--data-dir", required=True, help="TFDS data_dir to write into (local or gs://).")
  parser.add_argument("--num-train", type=int, default=2000, help="Training examples (default: 2000).")
  parser.add_argument("--num-test", type=int, default=500, help="Test examples (default: 500).")
  return parser


def write(args: argparse.Namespace) -> str:
  """Writes the dataset; returns its directory (DATA_DIR/NAME/VERSION).

  Raises:
    UserError: bad input, named, before anything is written.
  """
  for flag, count in (("num-train", args.num_train), ("num-test", args.num_test)):
    if count < 1:
      raise errors.ConfigError(f"--{flag} {count} is invalid: it must be an integer >= 1.")
  # pylint: disable=import-outside-toplevel  # TensorFlow loads only once the flags are sound
  from trainer.data import pipeline
  from trainer.data import synthetic
  from trainer.storage import api as storage
  builder = pipeline.tfds_builder(args.dataset, args.data_dir, also="")
  # The drawn data: one class's square per palette colour, at one image size.
  features = builder.info.features
  (height, width, _), classes = features["image"].shape, features["label"].num_classes
  if height is None or width is None:
    raise errors.DataError(
        f"--dataset {args.dataset!r} has images of varying size; trainer.synthetic draws "
        "datasets of one size, such as cifar10, mnist or fashion_mnist.")
  if classes > synthetic.MAX_CLASSES:
    raise errors.DataError(
        f"--dataset {args.dataset!r} has {classes} classes; trainer.synthetic draws at most "
        f"{synthetic.MAX_CLASSES}, as cifar10, mnist and fashion_mnist have.")
  if builder.is_prepared():
    raise errors.DataError(
        f"--data-dir {args.data_dir!r} already holds dataset {args.dataset!r} (version "
        f"{builder.version}): train on it (python -m trainer.task --dataset {args.dataset} "
        f"--data-dir {args.data_dir}), or give another --data-dir.")
  storage.ensure_writable_dir(args.data_dir, "--data-dir")
  return synthetic.write_tfds(args.dataset, args.data_dir, args.num_train, args.num_test)


def main(argv: Optional[list[str]] = None) -> int:
  """Runs the command line; returns the exit code."""
  args = build_parser().parse_args(argv)
  # TFDS warns, through absl, that the dataset it is about to write has no
  # dataset_info.json yet (as trainer.prepare).
  logging.getLogger("absl").setLevel(logging.ERROR)
  environment.quiet_tensorflow_logs()  # before TensorFlow loads
  try:
    path = write(args)
  # TransientError: storage that a rerun can get past (exit 142), as trainer.task.
  except (errors.UserError, errors.TransientError) as e:
    print(f"error: {e}", file=sys.stderr)
    return e.exit_code
  print(path)
  return errors.EXIT_OK


if __name__ == "__main__":
  sys.exit(main())
