"""The one typed configuration of a training run: `TrainConfig`, one field per flag.

Its defaults are the `cifar10` preset; the named presets (trainer/presets.py)
override some fields, and command-line flags then override the preset. The
resolved config is written to `JOB_DIR/config.json` at start-up, so every run
records what it did. docs/flags.md has the full flag list.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Optional, Tuple

from trainer import errors


# Smallest image side, in pixels, each --model takes. The tutorial CNN's three
# unpadded 3x3 convolutions and two 2x2 poolings: 18 -> 16 -> 8 -> 6 -> 3 -> 1;
# at 17 or less the last convolution gets 2x2 and Keras refuses the model.
# ResNet-20 pads its convolutions and pools globally, so any side would do; 16
# leaves its last stage 4x4 and is the floor --image-size has always had.
MIN_IMAGE_SIZE = {"tutorial": 18, "resnet20": 16}

# --dataset folder:PATH names an image folder; anything else a TFDS dataset.
FOLDER_PREFIX = "folder:"


def is_remote(path: str) -> bool:
  """Whether a path is a URL (gs://...) that TensorFlow's file systems read, not a local path."""
  return "://" in path


def folder_path(dataset: str) -> Optional[str]:
  """PATH of folder:PATH (local or gs://; '' if none follows), or None for a TFDS name."""
  return dataset[len(FOLDER_PREFIX):] if dataset.startswith(FOLDER_PREFIX) else None


def _field(default: Any, help: str, **kwargs) -> Any:  # pylint: disable=redefined-builtin
  """A dataclass field that carries its command-line help."""
  return dataclasses.field(default=default, metadata={"help": help, **kwargs})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything that determines a training run.

  Field names map to flags: `batch_size` is `--batch-size`.
  """

  # --- Data -------------------------------------------------------------
  dataset: str = _field(
      "cifar10",
      "TFDS image-classification dataset name (cifar10, mnist, fashion_mnist, "
      "any set with 'image' and 'label' features), or folder:PATH for "
      "PATH/{train,test}/<label>/*.png|jpg.")
  data_dir: Optional[str] = _field(
      None,
      "Directory (local or gs://) holding prepared TFDS data, read with "
      "download=False. Unset: TFDS downloads to its default cache. Not with folder:PATH.")
  train_split: str = _field(
      "train", "Split to train on: of the TFDS dataset, or a folder's train or test (slicing "
      "like train[:90%] works for both).")
  eval_split: str = _field("test", "Split to evaluate on (as --train-split).")
  image_size: Optional[int] = _field(
      None,
      "Resize images to SIZE x SIZE, at least 18 for --model tutorial and 16 for resnet20. "
      "Unset: keep the dataset's size, which must then be fixed and that large.")
  augment: bool = _field(False, "Random horizontal flip and 4-pixel-padded crop while training (CIFAR-like data).")
  shuffle_buffer: int = _field(16384, "Shuffle buffer, in examples.")
  cache: str = _field(
      "auto",
      "Keep decoded images in memory: auto (when they fit in --cache-limit-mb), "
      "memory, or none.",
      choices=("auto", "memory", "none"))
  cache_limit_mb: int = _field(4096, "Largest decoded split, in MiB per worker, that --cache auto keeps in memory.")

  # --- Model and optimisation --------------------------------------------
  model: str = _field(
      "tutorial",
      "Model architecture: tutorial (the TensorFlow tutorial's CNN, 122,570 parameters) or "
      "resnet20 (ResNet-20 of He et al. 2015, 269,722 parameters; preset cifar10-resnet20).",
      choices=("tutorial", "resnet20"))
  pixel_range: str = _field(
      "unit",
      "What the model's first layer maps uint8 pixels to: unit, [0, 1] (the tutorial's x / 255), "
      "or symmetric, [-1, 1] (x / 127.5 - 1; preset cifar10-best). Part of the model, so the "
      "export serves the same; ResNet-20 standardises per channel after it either way.",
      choices=("unit", "symmetric"))
  model_name: Optional[str] = _field(
      None,
      "Name under export/ and in TF Serving. Unset: the dataset name "
      "(the folder's name for folder:PATH).")
  # 6, not the tutorial's 10: with batch 64, the warm-up and learning rate
  # below and cosine decay, 6 epochs end above the tutorial's 10-epoch accuracy
  # on real CIFAR-10 in under 0.4x its wall time (docs/performance.md:
  # bench/end_to_end.py; the recipe chosen on a validation split).
  epochs: int = _field(6, "Training epochs.")
  batch_size: int = _field(
      64,
      "Global batch size, in images per step over all replicas; each replica "
      "gets batch_size / replicas.")
  # 2e-3, not the tutorial's 1e-3 (Keras's default for Adam, not a tuned
  # value): 2.83e-3 at batch 64 after the sqrt rule, reached after a short
  # warm-up (--warmup-epochs 0.3). On a validation split of real CIFAR-10 (5,000
  # training images held out), 6 epochs ended at 0.713 and 0.697 (two seeds)
  # against 0.676 and 0.653 for 1.5e-3 without warm-up (docs/performance.md).
  learning_rate: float = _field(
      2e-3,
      "Peak learning rate at --lr-reference-batch images per step; "
      "--lr-scaling scales it to the global batch size.")
  lr_reference_batch: int = _field(32, "Batch size at which --learning-rate applies unscaled.")
  lr_scaling: str = _field(
      "sqrt",
      "How the learning rate follows the global batch: sqrt (the usual rule "
      "for Adam), linear, or none.",
      choices=("sqrt", "linear", "none"))
  lr_schedule: str = _field(
      "cosine",
      "Learning-rate schedule after warm-up: cosine (decays to 0 at the last step, which "
      "settles the final epochs), constant (the tutorial's), or step (multiplied by "
      "--lr-step-factor at each of --lr-step-epochs).",
      choices=("constant", "cosine", "step"))
  lr_step_epochs: Tuple[float, ...] = _field(
      (),
      "Epochs at which --lr-schedule step multiplies the learning rate by --lr-step-factor, "
      "increasing, e.g. --lr-step-epochs 82 123.")
  lr_step_factor: float = _field(0.1, "What --lr-schedule step multiplies the learning rate by at each step, in (0, 1).")
  # Without it, Adam's first steps at the full rate cost the 6-epoch default
  # 3.6 points of validation accuracy (two seeds; docs/performance.md).
  warmup_epochs: float = _field(0.3, "Epochs of linear learning-rate warm-up from 0.")
  label_smoothing: float = _field(0.0, "Label smoothing for the cross-entropy loss, in [0, 1).")
  optimizer: str = _field(
      "adam",
      "adam (AdamW with --weight-decay) or sgd (momentum SGD, with --momentum).",
      choices=("adam", "sgd"))
  momentum: float = _field(0.9, "Momentum of --optimizer sgd, in [0, 1).")
  weight_decay: float = _field(
      0.0,
      "Weight decay of kernels, biases and BatchNorm excepted; 0 turns it off. With adam it is "
      "decoupled (AdamW): each step shrinks every kernel by this times the step's learning "
      "rate. With sgd it is L2 (as in PyTorch's SGD): this times the kernel is added to its "
      "gradient, i.e. a loss term of this / 2 times the squared kernel.")
  seed: int = _field(42, "Random seed for weights, shuffling and augmentation.")

  # --- Speed ----------------------------------------------------------------
  steps_per_execution: int = _field(
      20,
      "Training steps per call into the compiled training function; more "
      "steps cut Python overhead but coarsen logging and SIGTERM response.")
  jit_compile: str = _field(
      "auto",
      "Compile the forward and backward pass with XLA: auto (on GPUs; off on CPUs, "
      "where TensorFlow's oneDNN kernels train this CNN about 2x faster than XLA's), on, off.",
      choices=("auto", "on", "off"))
  mixed_precision: str = _field(
      "auto",
      "Compute in bfloat16 or float16 (with loss scaling); variables and the output layer "
      "stay float32. auto: bfloat16 on CPUs with native bfloat16 (AVX512-BF16 or AMX, "
      "where it was measured faster at equal accuracy), float32 elsewhere "
      "(trainer/training/precision.py); the choice is logged and recorded in config.json.",
      choices=("auto", "off", "bfloat16", "float16"))

  # --- Job directory, checkpoints, logging ---------------------------------
  job_dir: Optional[str] = _field(
      None,
      "Where config.json, TensorBoard logs, checkpoints, metrics.json and "
      "export/ go (local or gs://). Unset: runs/<model-name>.")
  keep_checkpoints: int = _field(3, "Checkpoints to keep; older ones are deleted.")
  log_every_steps: int = _field(
      100, "Training scalars are written every N global steps (a compiled call of "
      "--steps-per-execution steps ends early to get there).")
  progress: str = _field(
      "auto",
      "How the chief shows training progress: bar (a progress bar per epoch with "
      "images/s, loss and time left), log (a log line every --log-every-steps steps), "
      "or auto (bar when stderr is a terminal, else log). Other workers always log.",
      choices=("auto", "bar", "log"))
  profile_steps: Optional[str] = _field(
      None,
      "START,END: trace global training steps START to END (inclusive, counted from 1) "
      "with the TensorFlow profiler into JOB_DIR/logs/train, for TensorBoard's Profile "
      "tab (pip install \".[profile]\"); the chief's steps only. Unset: no trace.")
  publish_dir: Optional[str] = _field(
      None,
      "Also publish the export to PUBLISH_DIR/<model-name>/<version>/ "
      "(local or gs://BUCKET/models), safely for a TF Serving that polls it.")
  job_lock_wait_s: float = _field(
      180.0,
      "Seconds the chief waits for another training's lock on --job-dir before "
      "failing with exit code 2; covers the 120 s in which a deleted Job's pods "
      "drain beside a rerun's.")

  # --- Cluster --------------------------------------------------------------
  collective_timeout_s: float = _field(
      600.0,
      "Seconds a cross-worker collective may wait before the worker gives "
      "up and exits (a lost peer); must exceed the slowest step.")

  def min_image_size(self) -> int:
    """The smallest image side --model takes (MIN_IMAGE_SIZE), in pixels."""
    return MIN_IMAGE_SIZE[self.model]

  def folder_root(self) -> Optional[str]:
    """PATH of --dataset folder:PATH (local or gs://), or None for a TFDS dataset."""
    return folder_path(self.dataset)

  def resolved_model_name(self) -> str:
    """The name used under export/ and by TF Serving."""
    if self.model_name:
      return self.model_name
    root = self.folder_root()
    if root is not None:
      # A local path is made absolute first, so that folder:. and folder:../x
      # are named after the directory they are, not '.' or '..'.
      path = root.rstrip("/") if is_remote(root) else os.path.abspath(root)
      return path.rsplit("/", 1)[-1] or "images"
    return self.dataset.split("/")[0].split(":")[0]

  def resolved_job_dir(self) -> str:
    return self.job_dir or f"runs/{self.resolved_model_name()}"

  def effective_learning_rate(self) -> float:
    """Peak learning rate after scaling to the global batch size."""
    ratio = self.batch_size / self.lr_reference_batch
    factor = {"sqrt": math.sqrt(ratio), "linear": ratio, "none": 1.0}[self.lr_scaling]
    return self.learning_rate * factor

  def profile_window(self) -> Optional[tuple[int, int]]:
    """--profile-steps as (first, last) global step, both traced; None when unset.

    Raises:
      ConfigError: unless it is two integers START,END with 1 <= START <= END.
    """
    if self.profile_steps is None:
      return None
    parts = self.profile_steps.split(",")
    try:
      first, last = (int(part) for part in parts)
    except ValueError:
      first = last = 0  # not two integers: the message below says what is wanted
    if not 1 <= first <= last:
      raise errors.ConfigError(
          f"--profile-steps {self.profile_steps!r} is invalid: it must be START,END, two "
          "global step numbers with 1 <= START <= END (e.g. 100,120 traces 21 steps).")
    return first, last

  def use_xla(self, gpus: int) -> bool:
    """Whether to jit-compile, given the number of local GPUs."""
    return self.jit_compile == "on" or (self.jit_compile == "auto" and gpus > 0)

  def validate(self) -> None:
    """Raises ConfigError naming the first invalid field and a valid range."""
    def need(ok: bool, flag: str, value: Any, want: str) -> None:
      if not ok:
        raise errors.ConfigError(f"--{flag} {value!r} is invalid: it must be {want}.", flag=flag)

    need(self.epochs >= 1, "epochs", self.epochs, "an integer >= 1")
    need(self.batch_size >= 1, "batch-size", self.batch_size, "an integer >= 1 (the global batch)")
    need(self.learning_rate > 0, "learning-rate", self.learning_rate, "> 0")
    need(self.lr_reference_batch >= 1, "lr-reference-batch", self.lr_reference_batch, ">= 1")
    need(self.warmup_epochs >= 0, "warmup-epochs", self.warmup_epochs, ">= 0")
    need(self.warmup_epochs < self.epochs, "warmup-epochs", self.warmup_epochs,
         f"shorter than --epochs ({self.epochs})")
    need(0 <= self.label_smoothing < 1, "label-smoothing", self.label_smoothing, "in [0, 1)")
    # The decay per step is learning_rate * weight_decay of each kernel: at 1
    # or more with a learning rate of 1, a step would zero or flip the weights.
    need(self.weight_decay >= 0 and math.isfinite(self.weight_decay), "weight-decay",
         self.weight_decay, ">= 0 (0 turns it off)")
    need(self.weight_decay * self.effective_learning_rate() < 1, "weight-decay", self.weight_decay,
         f"below 1 / the peak learning rate ({1 / self.effective_learning_rate():.4g}), "
         "or one step would remove a kernel's whole value")
    need(0 <= self.momentum < 1, "momentum", self.momentum, "in [0, 1)")
    need(0 < self.lr_step_factor < 1, "lr-step-factor", self.lr_step_factor, "in (0, 1)")
    steps = list(self.lr_step_epochs)
    if self.lr_schedule == "step":
      need(bool(steps), "lr-step-epochs", steps, "one or more epochs with --lr-schedule step")
      need(all(a < b for a, b in zip(steps, steps[1:])), "lr-step-epochs", steps, "increasing")
      need(self.warmup_epochs < steps[0] and steps[-1] < self.epochs, "lr-step-epochs", steps,
           f"after --warmup-epochs ({self.warmup_epochs}) and before --epochs ({self.epochs})")
    else:
      need(not steps, "lr-step-epochs", steps, f"empty unless --lr-schedule step "
           f"(it is {self.lr_schedule})")
    need(self.shuffle_buffer >= 1, "shuffle-buffer", self.shuffle_buffer, ">= 1")
    need(self.cache_limit_mb >= 0, "cache-limit-mb", self.cache_limit_mb, ">= 0")
    need(self.image_size is None or self.image_size >= self.min_image_size(), "image-size",
         self.image_size, f">= {self.min_image_size()} pixels for --model {self.model} "
         "(config.MIN_IMAGE_SIZE)")
    need(self.steps_per_execution >= 1, "steps-per-execution", self.steps_per_execution, ">= 1")
    need(self.keep_checkpoints >= 1, "keep-checkpoints", self.keep_checkpoints, ">= 1")
    need(self.job_lock_wait_s >= 0, "job-lock-wait-s", self.job_lock_wait_s, ">= 0")
    need(self.log_every_steps >= 1, "log-every-steps", self.log_every_steps, ">= 1")
    self.profile_window()
    need(self.collective_timeout_s > 0, "collective-timeout-s", self.collective_timeout_s, "> 0")
    need(bool(self.dataset), "dataset", self.dataset, "a TFDS name or folder:PATH")
    if self.folder_root() is not None:
      need(bool(self.folder_root()), "dataset", self.dataset, "folder:PATH with a PATH")
      # The folder is read from PATH; a --data-dir beside it was read by nothing.
      need(self.data_dir is None, "data-dir", self.data_dir,
           f"left out with --dataset {self.dataset}, which is read from its PATH (a folder "
           "prepared by trainer.prepare is read as --dataset NAME --data-dir DIR)")
    name = self.resolved_model_name()
    need(name.replace("-", "").replace("_", "").replace(".", "").isalnum(), "model-name", name,
         "letters, digits, '-', '_' or '.' (it becomes a directory and a TF Serving model name)")

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


def fields() -> tuple[dataclasses.Field, ...]:
  return dataclasses.fields(TrainConfig)
