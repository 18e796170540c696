"""Input: TFDS datasets and image folders, validated up front, as tf.data pipelines.

A `Source` yields decoded `(uint8 image [H, W, C], int64 label)` examples of
one split for one input pipeline (one worker). The pipelines built on it
(`train_dataset`, `eval_dataset`) add caching, shuffling, augmentation,
batching and prefetching, identically for every source.

Pixels stay uint8 all the way: scaling to [0, 1] happens inside the model, so
the exported model takes images exactly as a client holds them, and the cache
holds 1 byte per pixel instead of 4.

Sharding across workers (`tf.distribute.InputContext`): by file when the split
has at least one file per worker (TFDS's `ReadConfig(input_context=...)`; an
image folder's files, trainer/data/folders.py), otherwise by example
(`Dataset.shard`). Either way each example goes to exactly one worker, so
evaluation sums to the same numbers as one worker.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import logging
from typing import Optional, Protocol

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from trainer import errors
from trainer.data import folders
from trainer.config import TrainConfig

log = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the model, the export and the reports need to know about the data."""
  name: str
  image_shape: tuple[int, int, int]
  class_names: tuple[str, ...]
  num_train_examples: int
  num_eval_examples: int

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


class Source(Protocol):
  """Decoded examples of the train and eval splits."""
  info: DatasetInfo

  def read(self, train: bool, input_context: Optional[tf.distribute.InputContext],
           seed: int) -> tf.data.Dataset:
    """Examples of the train (or eval) split for this input pipeline."""


# --------------------------------------------------------------------------
# Sources


class TfdsSource:
  """A prepared TFDS dataset (a catalog name, or one written by trainer.prepare)."""

  def __init__(self, builder: tfds.core.DatasetBuilder, info: DatasetInfo,
               train_split: str, eval_split: str, image_size: Optional[int]):
    self.builder = builder
    self.info = info
    self._splits = {True: train_split, False: eval_split}
    self._image_feature = builder.info.features["image"]
    self._resize = image_size

  def num_files(self, split: str) -> int:
    """Files TFDS can shard `split` by."""
    return len(self.builder.info.splits[split].file_instructions)

  def read(self, train, input_context, seed):
    split = self._splits[train]
    pipelines = input_context.num_input_pipelines if input_context else 1
    by_file = pipelines > 1 and self.num_files(split) >= pipelines
    read_config = tfds.ReadConfig(
        input_context=input_context if by_file else None,
        shuffle_seed=seed, try_autocache=False)
    # The 'image' and 'label' features (which _load_tfds checks), not
    # as_supervised: datasets written by trainer.prepare (TFDS's
    # store_as_tfds_dataset) declare no supervised keys.
    ds = self.builder.as_dataset(
        split=split, shuffle_files=train, read_config=read_config,
        # Shard before decoding so each worker decodes only its own images.
        decoders={"image": tfds.decode.SkipDecoding()})
    if pipelines > 1 and not by_file:
      ds = ds.shard(pipelines, input_context.input_pipeline_id)
    return ds.map(self._decode, num_parallel_calls=AUTOTUNE)

  def _decode(self, example):
    image = folders.resize(self._image_feature.decode_example(example["image"]), self._resize)
    return image, tf.cast(example["label"], tf.int64)


class ArraySource:
  """In-memory arrays; for benchmarks and tests that need no files."""

  def __init__(self, info: DatasetInfo, train: tuple[np.ndarray, np.ndarray],
               test: tuple[np.ndarray, np.ndarray]):
    self.info = info
    self._arrays = {True: train, False: test}

  def read(self, train, input_context, seed):
    del seed
    ds = tf.data.Dataset.from_tensor_slices(self._arrays[train])
    if input_context and input_context.num_input_pipelines > 1:
      ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    return ds


# --------------------------------------------------------------------------
# Loading and validation: cheap checks that fail before any training.


def load(config: TrainConfig) -> Source:
  """Resolves `config.dataset` to a validated Source.

  Runs no TensorFlow op, so that MultiWorkerMirroredStrategy can still be
  created after it (it must configure TensorFlow before any op runs).

  Raises:
    DataError: unknown dataset, missing or unprepared data, an image folder
      with no images, mismatched labels, a corrupt or odd-sized image.
  """
  if config.folder_root() is not None:
    return _load_folder(config)
  return _load_tfds(config)


def tfds_builder(name: str, data_dir: Optional[str],
                 also: str = ", or folder:PATH") -> tfds.core.DatasetBuilder:
  """The TFDS builder of the image-classification dataset `name` (trainer.task, trainer.synthetic).

  Args:
    also: what else --dataset takes, for the message.

  Raises:
    DataError: an unknown name (with the close ones), a builder that cannot be
      opened, or a dataset without 'image' and 'label' features.
  """
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    base = name.split("/")[0].split(":")[0]
    close = difflib.get_close_matches(base, tfds.list_builders(), n=3, cutoff=0.75)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise errors.DataError(
        f"unknown dataset {name!r}{hint}: --dataset takes a TFDS image-classification "
        f"name such as cifar10, mnist or fashion_mnist{also}.") from None
  except Exception as e:  # pylint: disable=broad-except
    raise errors.DataError(f"cannot open dataset {name!r} in --data-dir {data_dir!r}: {e}") from e

  features = builder.info.features
  keys = features.keys() if isinstance(features, tfds.features.FeaturesDict) else ()
  if not ("image" in keys and isinstance(features["image"], tfds.features.Image)
          and "label" in keys and isinstance(features["label"], tfds.features.ClassLabel)):
    raise errors.DataError(
        f"dataset {name!r} has no 'image' Image and 'label' ClassLabel features, so it is "
        "not an image-classification dataset this trainer can use.")
  return builder


def _load_tfds(config: TrainConfig) -> TfdsSource:
  name = config.dataset
  builder = tfds_builder(name, config.data_dir)
  features = builder.info.features

  if config.data_dir is not None:
    if not builder.is_prepared():
      raise errors.DataError(
          f"--data-dir {config.data_dir!r} does not hold dataset {name!r} (version "
          f"{builder.version}): prepare it with `tfds build {name} --data_dir "
          f"{config.data_dir}`, or leave --data-dir out to let TFDS download it.")
  elif not builder.is_prepared():
    log.info("Dataset %s is not in %s; downloading and preparing it.", name, builder.data_dir)
    try:
      builder.download_and_prepare()
    except Exception as e:  # pylint: disable=broad-except
      raise errors.DataError(
          f"could not download dataset {name!r} into {builder.data_dir}: {e}. Prepare it "
          "with `tfds build` where the network allows and pass --data-dir.") from e

  counts = {}
  for flag, split in (("train-split", config.train_split), ("eval-split", config.eval_split)):
    try:
      counts[flag] = builder.info.splits[split].num_examples
    # NotImplementedError: TFDS's grammar refuses a slice of `all` (all[:90%]).
    except (KeyError, ValueError, AssertionError, NotImplementedError) as e:
      raise errors.DataError(
          f"--{flag} {split!r} is not a split of {name!r}: it has "
          f"{', '.join(sorted(builder.info.splits.keys()))} ({_one_line(e)}).") from None
    if counts[flag] == 0:
      raise errors.DataError(f"--{flag} {split!r} of {name!r} has no examples.")

  shape = _image_shape(features["image"].shape, config, name)
  info = DatasetInfo(
      name=config.resolved_model_name(), image_shape=shape,
      class_names=tuple(features["label"].names),
      num_train_examples=counts["train-split"], num_eval_examples=counts["eval-split"])
  return TfdsSource(builder, info, config.train_split, config.eval_split, config.image_size)


def _one_line(e: Exception) -> str:
  """TFDS's own message, whose lines (all[:90%]'s runs to three) would break the one error line."""
  return " ".join(str(e).split())


def _image_shape(shape, config: TrainConfig, what: str) -> tuple[int, int, int]:
  image_size = config.image_size
  h, w, c = shape
  if c not in (1, 3):
    raise errors.DataError(f"{what} has {c}-channel images; the trainer takes 1 (grey) or 3 (RGB).")
  if image_size:
    return (image_size, image_size, c)
  if h is None or w is None:
    raise errors.DataError(f"{what} has images of varying size: pass --image-size N to resize them.")
  if min(h, w) < config.min_image_size():
    raise errors.DataError(
        f"{what} has {h}x{w} images, smaller than the {config.min_image_size()} pixels a side "
        f"--model {config.model} takes: pass --image-size 32 (or at least "
        f"{config.min_image_size()}) to upscale them.")
  return (h, w, c)


def _load_folder(config: TrainConfig) -> folders.FolderSource:
  """Checks PATH/{train,test}/<label>/*.png|jpg and every image's header."""
  root = config.folder_root()
  folder = folders.scan(root, f"--dataset {config.dataset}")
  if folder.odd_size and not config.image_size:
    raise errors.DataError(folder.odd_size)
  height, width = folder.size or (None, None)
  shape = _image_shape((height, width, folder.channels), config, f"folder:{root}")
  splits = {}
  for flag, spec in (("train-split", config.train_split), ("eval-split", config.eval_split)):
    try:
      splits[flag] = folders.select(folder, spec)
    except (ValueError, NotImplementedError) as e:  # as for TFDS datasets, above
      raise errors.DataError(
          f"--{flag} {spec!r} is not a split of folder:{root}: it has "
          f"{', '.join(sorted(folders.SPLITS))} ({_one_line(e)}).") from None
    if not splits[flag].files:
      raise errors.DataError(f"--{flag} {spec!r} of folder:{root} has no examples.")
  info = DatasetInfo(
      name=config.resolved_model_name(), image_shape=shape, class_names=folder.class_names,
      num_train_examples=len(splits["train-split"].files),
      num_eval_examples=len(splits["eval-split"].files))
  return folders.FolderSource(folder, info, config.image_size,
                              lambda examples: _should_cache(config, info, examples),
                              splits["train-split"], splits["eval-split"])


# --------------------------------------------------------------------------
# Pipelines


def augment(images: tf.Tensor, labels: tf.Tensor, pad: int = 4):
  """CIFAR augmentation of a batch: per image, a random crop of the image
  zero-padded by `pad` pixels, and a random horizontal flip.

  Vectorised over the batch (two gathers and a select), because a per-image
  `map` costs more CPU than the training step it feeds on small images.

  Args:
    images: uint8 [B, H, W, C].
    labels: passed through.

  Returns:
    (images, labels), images with the same dtype and shape.
  """
  shape = tf.shape(images)
  batch, h, w = shape[0], images.shape[1], images.shape[2]
  padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
  offsets = tf.random.uniform([batch, 2], 0, 2 * pad + 1, dtype=tf.int32)
  rows = offsets[:, :1] + tf.range(h)[tf.newaxis, :]  # [B, H]
  cols = offsets[:, 1:] + tf.range(w)[tf.newaxis, :]  # [B, W]
  cropped = tf.gather(padded, rows, axis=1, batch_dims=1)   # [B, H, W + 2 pad, C]
  cropped = tf.gather(cropped, cols, axis=2, batch_dims=1)  # [B, H, W, C]
  flip = tf.random.uniform([batch, 1, 1, 1]) < 0.5
  return tf.where(flip, tf.reverse(cropped, axis=[2]), cropped), labels


def _should_cache(config: TrainConfig, info: DatasetInfo, examples: int) -> bool:
  if config.cache != "auto":
    return config.cache == "memory"
  return examples * int(np.prod(info.image_shape)) <= config.cache_limit_mb * 2**20


def _holds_decoded(source: Source, train: bool,
                   input_context: Optional[tf.distribute.InputContext]) -> bool:
  """Whether `source` already serves these examples decoded from memory (an image
  folder's share): a cache() on top would hold a second copy."""
  return getattr(source, "holds_decoded", lambda train, context: False)(train, input_context)


def _share(input_context: Optional[tf.distribute.InputContext], config: TrainConfig,
           examples: int) -> tuple[int, int, int]:
  """(pipeline id, per-replica batch, this pipeline's share of `examples`, rounded up)."""
  if input_context is None:
    return 0, config.batch_size, examples
  pipelines = input_context.num_input_pipelines
  return (input_context.input_pipeline_id,
          input_context.get_per_replica_batch_size(config.batch_size), -(-examples // pipelines))


def shuffle_seed(seed: int, pipeline_id: int, start_step: int) -> int:
  """The shuffle seed of one input pipeline, for a run that starts at `start_step`.

  A fresh run (step 0) shuffles with `seed + pipeline_id`, so runs with the
  same --seed see the same order. A resumed run mixes in the global step it
  resumes from: its data iterator starts over (its position is not
  checkpointed), and with the first run's seed it would replay the exact
  order of the first run's first steps instead of a fresh shuffle.
  """
  if start_step == 0:
    return seed + pipeline_id
  digest = hashlib.sha256(f"{seed}/{pipeline_id}/{start_step}".encode()).digest()
  return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF  # a non-negative int32


def train_dataset(source: Source, config: TrainConfig,
                  input_context: Optional[tf.distribute.InputContext] = None,
                  start_step: int = 0) -> tf.data.Dataset:
  """Endless shuffled training batches of per-replica size for one input pipeline.

  Args:
    start_step: the global step the run starts (or resumes) at; see `shuffle_seed`.
  """
  pipeline_id, batch, examples = _share(input_context, config, source.info.num_train_examples)
  seed = shuffle_seed(config.seed, pipeline_id, start_step)
  ds = source.read(True, input_context, seed)
  if _should_cache(config, source.info, examples) and not _holds_decoded(source, True, input_context):
    ds = ds.cache()
  # A buffer larger than the split adds memory, not randomness.
  ds = ds.shuffle(min(config.shuffle_buffer, examples), seed=seed, reshuffle_each_iteration=True)
  ds = ds.repeat()
  ds = ds.batch(batch, drop_remainder=True, num_parallel_calls=AUTOTUNE)
  if config.augment:
    ds = ds.map(augment, num_parallel_calls=AUTOTUNE)
  return ds.prefetch(AUTOTUNE)


def eval_dataset(source: Source, config: TrainConfig,
                 input_context: Optional[tf.distribute.InputContext] = None) -> tf.data.Dataset:
  """One pass over this pipeline's share of the eval split, in per-replica batches."""
  _, batch, examples = _share(input_context, config, source.info.num_eval_examples)
  ds = source.read(False, input_context, config.seed)
  if _should_cache(config, source.info, examples) and not _holds_decoded(source, False, input_context):
    ds = ds.cache()
  return ds.batch(batch).prefetch(AUTOTUNE)


def describe(source: Source, config: TrainConfig, num_workers: int) -> str:
  """One log line on what will be read and how."""
  info = source.info
  cache = _should_cache(config, info, -(-info.num_train_examples // num_workers))  # per worker
  sharding = ""
  if num_workers > 1:
    files = getattr(source, "num_files", lambda split: 0)(config.train_split)
    how = "by file" if files >= num_workers else "by example"
    sharding = f"; each of {num_workers} workers reads its own shard ({how})"
  return (f"dataset {config.dataset}: {info.num_train_examples} train / {info.num_eval_examples} "
          f"eval images of {'x'.join(map(str, info.image_shape))}, {info.num_classes} classes; "
          f"cache in memory: {'yes' if cache else 'no'}; augment: {'yes' if config.augment else 'no'}"
          f"{sharding}")
