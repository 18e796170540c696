"""Command line: flags -> TrainConfig -> train.run(), errors -> exit codes.

  python -m trainer.task --dataset cifar10 --job-dir runs/cifar10
  python -m trainer.task --help

Exit codes (trainer/errors.py): 0 done, 1 unexpected failure, 2 bad input,
129 a peer worker was lost, 142 storage failed in a way a rerun can get past,
143 stopped on SIGTERM with the state saved.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import gc
import logging
import os
import signal
import sys
import typing
from typing import Optional, Sequence

from trainer import config as config_lib
from trainer import environment
from trainer import errors
from trainer import presets

log = logging.getLogger("trainer")


def _flag_type(field: dataclasses.Field):
  hint = typing.get_type_hints(config_lib.TrainConfig)[field.name]
  args = [a for a in typing.get_args(hint) if a is not type(None)]
  return args[0] if args else hint


def build_parser() -> argparse.ArgumentParser:
  """One flag per TrainConfig field, with its default and preset overrides in --help."""
  parser = argparse.ArgumentParser(
      prog="python -m trainer.task",
      description="Train the tutorial CNN on a TFDS dataset or an image folder, write "
                  "TensorBoard logs and checkpoints to --job-dir, and export a SavedModel "
                  "for TF Serving. Flags override the --preset.",
      epilog="Exit codes: 0 done (or already done), 1 unexpected failure, 2 bad input, "
             f"{errors.EXIT_PEER_LOST} a peer worker was lost, {errors.EXIT_TRANSIENT} storage "
             "failed in a way a rerun can get past, "
             f"{errors.EXIT_PREEMPTED} stopped "
             "on SIGTERM after saving a checkpoint (rerun to resume).")
  parser.add_argument(
      "--preset", default="cifar10", choices=sorted(presets.PRESETS),
      help="Named configuration the other flags override (default: cifar10).")
  for field in config_lib.fields():
    flag = "--" + field.name.replace("_", "-")
    overrides = [f"{name}: {values[field.name]}" for name, values in presets.PRESETS.items()
                 if field.name in values]
    help_text = f"{field.metadata['help']} (default: {field.default}"
    help_text += f"; preset {', '.join(overrides)})" if overrides else ")"
    kind = _flag_type(field)
    kwargs = dict(default=argparse.SUPPRESS, help=help_text.replace("%", "%%"))
    if kind is bool:
      parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
    elif typing.get_origin(typing.get_type_hints(config_lib.TrainConfig)[field.name]) is tuple:
      # Tuple[float, ...]: space-separated values; none (the bare flag) is the empty tuple.
      parser.add_argument(flag, type=kind, nargs="*", metavar=field.name.upper(), **kwargs)
    else:
      parser.add_argument(flag, type=kind, choices=field.metadata.get("choices"),
                          metavar=field.name.upper(), **kwargs)
  return parser


# Flags that only one choice of another flag reads: given beside another choice
# they would be ignored without a word. field -> (the other field, its value).
_ONLY_WITH = {
    "momentum": ("optimizer", "sgd"),  # AdamW has no momentum flag: its betas are Keras's
    "lr_step_factor": ("lr_schedule", "step"),
    "cache_limit_mb": ("cache", "auto"),
}


def parse_config(argv: Optional[Sequence[str]] = None) -> config_lib.TrainConfig:
  """Parses flags into a validated config.

  Raises:
    SystemExit(2): for flags argparse rejects (unknown flag, wrong type).
    ConfigError: for values TrainConfig.validate rejects.
  """
  args = vars(build_parser().parse_args(argv))
  preset = args.pop("preset")
  config = presets.preset(preset, **args)
  try:
    config.validate()
  except errors.ConfigError as e:
    # A value the preset set clashes with a flag given (cifar10-best's 2
    # warm-up epochs with --epochs 1): say where it came from and what to pass.
    field = (e.flag or "").replace("-", "_")
    if field in presets.PRESETS[preset] and field not in args:
      raise errors.ConfigError(
          f"{e} That value of --{e.flag} is --preset {preset}'s: pass --{e.flag} as well, or "
          "another --preset.", flag=e.flag) from e
    raise
  for field, (other, wanted) in _ONLY_WITH.items():
    if field in args and getattr(config, other) != wanted:
      flag, other_flag = "--" + field.replace("_", "-"), "--" + other.replace("_", "-")
      raise errors.ConfigError(
          f"{flag} {args[field]} has no effect with {other_flag} {getattr(config, other)}: it "
          f"applies only to {other_flag} {wanted}. Drop {flag}, or pass {other_flag} {wanted}.",
          flag=field.replace("_", "-"))
  return config


def _setup_logging() -> None:
  worker = environment.read().worker_index
  prefix = f"[worker {worker}] " if worker else ""
  logging.basicConfig(
      level=logging.INFO, stream=sys.stderr,
      format=f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s")
  # TFDS logs every file it opens through absl at INFO.
  logging.getLogger("absl").setLevel(logging.WARNING)


def _sigterm_at_start_up(signum, frame):
  """SIGTERM while flags are parsed, TensorFlow imports and the data is checked: exit now.

  Nothing is held or written yet (the job-dir lock comes later, under
  trainer/training/train.py's own handler), so there is nothing to save. An
  exception raised here instead would surface inside whatever import was
  running, where libraries catch it (numpy turns it into an ImportError), and
  end in a traceback and exit 1, which a Job counts as a crash.
  """
  del signum, frame
  sys.stderr.write("error: SIGTERM before training started: nothing to save yet; exiting.\n")
  sys.stderr.flush()
  os._exit(errors.EXIT_PREEMPTED)  # pylint: disable=protected-access


def _import_training():
  """Imports the training library (TensorFlow, Keras, TFDS) with Python's cyclic GC paused.

  The import builds about a million Python objects. Each time allocations pass
  the collector's threshold it walks them, again and again as they pile up:
  a third of the import's CPU (perf: gc_collect_main and its visit_*
  callbacks), about 0.7 s of 3.1 s per process here. None of it finds
  garbage worth the walk. Pausing the collector for the import and then
  freezing what it built (moving it to the permanent generation, which later
  collections skip, as CPython's gc.freeze documents for long-lived start-up
  state) saves that walk once, and again at every full collection during
  training. A process imports this once, so nothing is leaked by it.
  """
  gc.disable()
  try:
    from trainer.training import train  # pylint: disable=import-outside-toplevel
  finally:
    gc.freeze()
    gc.enable()
  return train


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the trainer; returns the process exit code."""
  # In a container this process is PID 1, which ignores SIGTERM unless it has
  # a handler. The training loop installs its own, checkpointing, handler.
  previous = signal.signal(signal.SIGTERM, _sigterm_at_start_up)
  try:
    return _main(argv)
  except errors.Preempted as e:
    # SIGTERM during start-up (parsing, TensorFlow's import), before the run's own handling:
    # the retriable exit code, not a traceback and exit 1 that a Job would count as a crash.
    print(f"error: {e}", file=sys.stderr)
    return e.exit_code
  finally:
    signal.signal(signal.SIGTERM, previous)


def _check_local_folder(config: config_lib.TrainConfig) -> None:
  """A local --dataset folder:PATH that is no directory fails here, before TensorFlow's
  import (seconds), with the folder scan's message (trainer/data/folders.py); a remote one
  (gs://) is the scan's to check, through TensorFlow's file systems."""
  root = config.folder_root()
  if root is not None and not config_lib.is_remote(root) and not os.path.isdir(root):
    raise errors.DataError(f"--dataset {config.dataset}: no such directory.")


def _main(argv: Optional[Sequence[str]]) -> int:
  try:
    config = parse_config(argv)
    _check_local_folder(config)
  except errors.UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return e.exit_code
  _setup_logging()
  environment.quiet_tensorflow_logs()
  environment.prefer_onednn()
  # Imported here so that flag errors above answer before TensorFlow loads.
  train = _import_training()

  try:
    train.run(config)
  except errors.UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return e.exit_code
  except (errors.Preempted, errors.PeerLostError, errors.TransientError) as e:
    log.error("%s", e)
    return e.exit_code
  except KeyboardInterrupt:
    log.error("Interrupted.")
    return 130
  except Exception as e:  # pylint: disable=broad-except
    # Out of (GPU or host) memory for this model at this batch: the same flags
    # run out again, so it is bad input (exit 2), said in one line; anything
    # else is a bug (traceback, exit 1).
    import tensorflow as tf  # pylint: disable=import-outside-toplevel  # loaded by train
    if not isinstance(e, tf.errors.ResourceExhaustedError):
      raise
    detail = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
    print(f"error: out of memory ({detail}). Lower --batch-size (the global batch, "
          f"{config.batch_size} images per step) or --image-size"
          f"{f' ({config.image_size})' if config.image_size else ''}, or give each worker more "
          "memory.", file=sys.stderr)
    return errors.EXIT_USAGE
  return errors.EXIT_OK


def main_entry() -> None:
  """The `cnn-trainer` console script and `python -m trainer.task`: exits as soon as main returns.

  Everything a run writes is durable by then: checkpoints, the export and
  metrics.json are written synchronously and TensorBoard's writers closed by
  the loop. An ordinary interpreter shutdown would still spend seconds
  tearing down TensorFlow's runtime and tf.data's threads (2.5-4 s after a
  SIGTERM mid-epoch on 50,000 images here, 13-18 s on a loaded machine), out
  of a pod's grace period; os._exit skips it (bench/sigterm_exit.py).
  """
  code = main()
  # atexit's handlers still run (they take milliseconds: autograph deletes its
  # generated files from TMPDIR); the interpreter's teardown does not.
  atexit._run_exitfuncs()  # pylint: disable=protected-access
  logging.shutdown()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)  # pylint: disable=protected-access


if __name__ == "__main__":
  main_entry()
