"""Converts an image folder, once, into a prepared, sharded TFDS dataset.

  python -m trainer.prepare folder:PATH --data-dir DIR [--name NAME] [--num-shards N]
  python -m trainer.task --dataset NAME --data-dir DIR

The conversion, and why it pays, is trainer/data/prepared.py's.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from trainer import environment
from trainer import errors
from trainer.config import folder_path
from trainer.data.prepared import MIN_SHARDS, VERSION, prepare


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m trainer.prepare",
      description="Convert an image folder PATH/{train,test}/<label>/*.png|jpg, once, into a "
                  "prepared, sharded TFDS dataset that `python -m trainer.task --dataset NAME "
                  "--data-dir DIR` reads.",
      epilog="Exit codes: 0 done, 1 unexpected failure, 2 bad input.")
  parser.add_argument("source", metavar="folder:PATH", help="The image folder, local or gs://.")
  parser.add_argument("--data-dir", required=True,
                      help="TFDS data_dir to write into, local or gs:// (required).")
  parser.add_argument("--name", help="Dataset name (default: the folder's name).")
  parser.add_argument("--num-shards", type=int,
                      help=f"Files per split (default: max({MIN_SHARDS}, one per 128 MiB), "
                           "at most the smallest split's images).")
  return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the conversion; returns the process exit code."""
  args = build_parser().parse_args(argv)
  logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                      format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  # TFDS logs every file it writes, and warns that the dataset it is about
  # to write does not exist yet.
  logging.getLogger("absl").setLevel(logging.ERROR)
  environment.quiet_tensorflow_logs()  # before TensorFlow loads
  try:
    root = folder_path(args.source)
    if not root:  # a TFDS name, or folder: with no PATH
      raise errors.ConfigError(f"{args.source!r}: trainer.prepare takes folder:PATH.")
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    tfds.disable_progress_bar()  # its bar says "Downloading", which this is not
    prepared = prepare(root, args.data_dir, args.name, args.num_shards)
  # TransientError: storage that a rerun can get past (exit 142), as trainer.task.
  except (errors.UserError, errors.TransientError) as e:
    print(f"error: {e}", file=sys.stderr)
    return e.exit_code
  h, w, c = prepared.image_shape
  print(f"Prepared {prepared.name} {VERSION} in {prepared.path}: {prepared.counts['train']} train / "
        f"{prepared.counts['test']} test images of {h or '?'}x{w or '?'}x{c}, "
        f"{prepared.num_shards} files per split, in {prepared.seconds:.1f} s.")
  if h is None:
    print("The images differ in size: train with --image-size N.")
  print(f"Train on it with:\n  {prepared.train_command()}")
  return errors.EXIT_OK


def main_entry() -> None:
  """The `cnn-prepare` console script."""
  sys.exit(main())


if __name__ == "__main__":
  main_entry()
