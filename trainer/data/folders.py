"""Image folders, PATH/{train,test}/<label>/*.png|jpg: checked, sharded by file, decoded once.

Every worker, at start-up:
1. lists the files (tf.io.gfile: local or gs://), sorted by label folder and
   file name, so every worker holds the same list; class k is the k-th label
   folder in sorted order;
2. reads every file's header (size, grey or colour; a few bytes each), so
   every worker agrees on the image shape and a folder of odd sizes fails
   alike on all of them;
3. selects the files of --train-split and --eval-split (`select`: `train`,
   `test`, or TFDS's slicing of them, such as `train[:90%]`);
4. when its input pipeline first reads a split, decodes its own share of
   the files, `files[pipeline::num_pipelines]` (by file), exactly once, in
   parallel inside tf.data, and keeps the pixels in memory when the share
   fits (--cache, --cache-limit-mb). Every later epoch reads them from
   there: no second read, no second decode. A share that does not fit is
   decoded once only to find bad files by name, then streamed from its
   files, decoding in the pipeline.

Steps 1 to 3 run in `data.load`, before the cluster assembles, and run no
TensorFlow op: MultiWorkerMirroredStrategy must be created before any op
runs. So a file that is not an image, or of an odd size, fails before the
cluster starts; a file whose header is intact but whose pixels are not
fails at its worker's first read, named the same way, with exit code 2.

Decoding engine, measured on 60,000 CIFAR-sized PNGs on 2 cores shared with
other jobs (ranges over 3-5 runs): a Pillow thread pool 3.7-5.2 s, slower
than Pillow in one thread (2.0-4.1 s with open(), 2.8-5.6 s through GFile),
because a 32x32 PNG decodes in less time than the Python around it, which
holds the GIL; tf.data with one `map` call per file 2.9-5.9 s; tf.data with
`_DECODE_BATCH` files per call 1.1-2.7 s. Hence the last: it is the fastest
here and the only one that grows with the cores. Its decoder is TFDS's
(`tf.io.decode_image`), so pixels equal those of the same files prepared
with `trainer.prepare`. On 50,000 + 10,000 PNGs, one worker, against
tfds.ImageFolder after a serial Pillow scan: data.load 5.1 s -> 0.4 s; to
the first batch 6.4-6.5 s -> 2.1-2.2 s; to the end of the first epoch
8.4-8.8 s -> 2.3-2.4 s (its input rate 13,000-15,000 -> 25,000-26,000
images/s, decode included); later epochs read memory at 260,000-280,000
images/s (a cache() of single images: 380,000-540,000), far above training.
Peak RSS 817 -> 874 MB.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import os
from typing import Any, Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from trainer import config as config_lib
from trainer import errors
from trainer.data import image_files

AUTOTUNE = tf.data.AUTOTUNE
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")  # as tfds.ImageFolder reads them
SPLITS = ("train", "test")

# Files decoded per tf.data call: one call per 32x32 PNG costs more than its
# decode (see the module docstring); 256 amortises it and still gives each
# core several calls for a 10,000-image share.
_DECODE_BATCH = 256
# Threads reading headers of remote (gs://) files: there the time is network
# latency, not the GIL. Local headers are read serially: 60,000 take 0.33 s,
# and threads made it slower (GIL contention), measured on 2 cores.
_REMOTE_THREADS = 64


def share(items, num_workers: int, worker_index: int):
  """Worker `worker_index`'s share of `items`: every num_workers-th, from its index.

  The shares of all workers are disjoint and together hold every item once;
  with files listed in label order, each share holds every class.
  """
  return items[worker_index::num_workers]


@dataclasses.dataclass(frozen=True)
class Split:
  """The files and labels a split spec (--train-split, --eval-split) selects from a Folder."""
  spec: str
  files: list[str]
  labels: np.ndarray  # int64 class index per file


def select(folder: "Folder", spec: str) -> Split:
  """The files and labels of split `spec`: train, test, or TFDS's slicing of them.

  The grammar is TFDS's own (`tfds.core.ReadInstruction.from_spec`), so
  `--train-split` and `--eval-split` read alike for a folder and for a TFDS
  dataset: `train[:10%]`, `train[-5000:]`, `train[:90%]`, `test[:500]`,
  `train+test`. A slice is taken from the split's files in a fixed
  pseudo-random order, that of a hash of each file's path under the split
  folder, rather than in label order (where `train[:10%]` would be one
  class): every worker, machine and --seed selects the same files, and
  `train[:90%]` and `train[90%:]` are disjoint and hold every file between
  them. The selected files keep the label order a whole split has.

  Raises:
    ValueError: TFDS's message: no such split, or a slice it cannot read.
  """
  infos = {split: tfds.core.SplitInfo(name=split, shard_lengths=[len(folder.files[split])],
                                      num_bytes=0)
           for split in SPLITS}
  files, labels = [], []
  for part in tfds.core.ReadInstruction.from_spec(spec).to_absolute(infos):
    indices = range(len(folder.files[part.splitname]))
    if part.from_ is not None or part.to is not None:
      indices = sorted(_slice_order(folder, part.splitname)[part.from_:part.to])
    files += [folder.files[part.splitname][i] for i in indices]
    labels.append(folder.labels[part.splitname][list(indices)])
  return Split(spec, files, np.concatenate(labels).astype(np.int64))


def _slice_order(folder: "Folder", split: str) -> list[int]:
  """Indices of `split`'s files in the order slices are taken from (see `select`)."""
  prefix = len(folder.root.rstrip("/")) + len(split) + 2  # ROOT/split/
  keys = [hashlib.sha256(path[prefix:].encode()).digest() for path in folder.files[split]]
  return sorted(range(len(keys)), key=keys.__getitem__)


@dataclasses.dataclass(frozen=True)
class Folder:
  """A checked image folder: its files, their labels, and the images' common shape."""
  root: str
  class_names: tuple[str, ...]
  files: dict[str, list[str]]  # split -> paths, sorted by label folder, then file name
  labels: dict[str, np.ndarray]  # split -> int64 class index per file
  channels: int  # 1 if every image is greyscale, else 3
  size: Optional[tuple[int, int]]  # (height, width) of every image; None if they differ
  odd_size: str = ""  # when size is None: which two files differ, as an error message


def scan(root: str, what: str) -> Folder:
  """Lists and checks PATH/{train,test}/<label>/*.png|jpg and reads every header.

  Args:
    root: the folder, local or gs://.
    what: how error messages name the folder, e.g. "--dataset folder:PATH".

  Raises:
    DataError: no such folder, a missing split, no images, different label
      sets, empty label folders, a file that is not an image.
  """
  if not tf.io.gfile.isdir(root):
    raise errors.DataError(f"{what}: no such directory.")
  splits = {}
  for split in SPLITS:
    split_dir = os.path.join(root, split)
    if not tf.io.gfile.isdir(split_dir):
      raise errors.DataError(
          f"{what} has no {split}/ directory: lay images out as "
          f"{root}/train/<label>/*.png and {root}/test/<label>/*.png.")
    splits[split] = {
        label.rstrip("/"): sorted(f for f in tf.io.gfile.listdir(os.path.join(split_dir, label))
                                  if f.lower().endswith(IMAGE_EXTENSIONS))
        for label in sorted(tf.io.gfile.listdir(split_dir))
        if tf.io.gfile.isdir(os.path.join(split_dir, label))}
    if not any(splits[split].values()):
      raise errors.DataError(
          f"{what} has no .png or .jpg images under {split}/<label>/: "
          f"lay images out as {root}/{split}/<label>/*.png.")
  train_labels = {k for k, v in splits["train"].items() if v}
  test_labels = {k for k, v in splits["test"].items() if v}
  if train_labels != test_labels:
    raise errors.DataError(
        f"{what}: train/ and test/ have different label sets "
        f"(only in train: {sorted(train_labels - test_labels) or 'none'}; only in test: "
        f"{sorted(test_labels - train_labels) or 'none'}). Give both the same <label> folders.")
  if len(train_labels) < 2:
    raise errors.DataError(f"{what} has one label; classification needs two or more.")
  empty = (set(splits["train"]) | set(splits["test"])) - train_labels
  if empty:
    raise errors.DataError(f"{what} has empty <label> folders ({sorted(empty)}): remove them.")

  class_names = tuple(sorted(train_labels))
  files, labels = {}, {}
  for split in SPLITS:
    pairs = [(os.path.join(root, split, label, name), k)
             for k, label in enumerate(class_names) for name in splits[split][label]]
    files[split] = [p for p, _ in pairs]
    labels[split] = np.array([k for _, k in pairs], np.int64)

  every = files["train"] + files["test"]
  if config_lib.is_remote(root):
    with concurrent.futures.ThreadPoolExecutor(_REMOTE_THREADS) as pool:
      headers = list(pool.map(image_files.header, every))
  else:
    headers = [image_files.header(p) for p in every]
  first = headers[0][0]
  odd = next((i for i, (size, _) in enumerate(headers) if size != first), None)
  odd_size = ""
  if odd is not None:
    (h, w), (h0, w0) = headers[odd][0], first
    odd_size = (f"image {every[odd]} is {w}x{h} pixels but {every[0]} is {w0}x{h0}: "
                "pass --image-size N to resize all images.")
  return Folder(root=root, class_names=class_names, files=files, labels=labels,
                channels=1 if all(grey for _, grey in headers) else 3,
                size=None if odd_size else first, odd_size=odd_size)


def resize(image: tf.Tensor, image_size: Optional[int]) -> tf.Tensor:
  """uint8 [H, W, C] -> uint8 [image_size, image_size, C], antialiased and rounded.

  The one resize of both input paths (TfdsSource uses it too), so a folder
  and its prepared dataset give the same pixels. No-op without image_size.
  """
  if not image_size:
    return image
  image = tf.image.resize(image, [image_size, image_size], antialias=True)
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def decode_image(contents: tf.Tensor, channels: int, image_size: Optional[int]) -> tf.Tensor:
  """An encoded image -> uint8 [H, W, channels], as TFDS decodes it; resized if image_size."""
  return resize(tf.io.decode_image(contents, channels=channels, expand_animations=False),
                image_size)


def decode_batches(paths: tf.data.Dataset, decode, spec: tf.TensorSpec) -> tf.data.Dataset:
  """Decodes a dataset of (path, label), in order, in parallel: (decoded, labels) batches.

  Args:
    decode: path -> what `spec` describes, e.g. an image.
  """
  return paths.batch(_DECODE_BATCH).map(
      lambda batch, labels: (tf.map_fn(decode, batch, fn_output_signature=spec), labels),
      num_parallel_calls=AUTOTUNE, deterministic=True)


def decode_files(paths: list[str], labels: np.ndarray, channels: int,
                 image_size: Optional[int], shape: Optional[tuple[int, int, int]] = None,
                 keep: bool = True):
  """Decodes every one of `paths` once, in parallel; a bad file fails by name.

  Args:
    labels: one per path, carried along.
    shape: every decoded image's (H, W, C); only needed with keep.
    keep: keep the decoded images; False only checks them (of any size),
      holding a few batches at a time.

  Returns:
    With keep, (images [B, H, W, C], labels [B]) batches in the order of
    `paths`, served from memory: the dataset's cache() is filled here, and
    every later iteration reads it (tf.data documents that a cache filled
    by one complete pass serves all later ones). Not a tensor: tf.data
    copies a tensor it slices each time an iterator starts (its graph
    rewrite serialises it: measured +100% of its size), not a cache.
    Without keep, the files' total size in bytes.

  Raises:
    DataError: a file that cannot be decoded, named.
  """
  if keep:
    spec = tf.TensorSpec(shape, tf.uint8)
    decode = lambda path: decode_image(tf.io.read_file(path), channels, image_size)
  else:
    spec = tf.TensorSpec([2], tf.int64)

    def decode(path):  # the decode must feed the result, or the graph drops it
      contents = tf.io.read_file(path)
      pixels = tf.size(decode_image(contents, channels, image_size), tf.int64)
      return tf.stack([pixels, tf.cast(tf.strings.length(contents), tf.int64)])
  ds = decode_batches(tf.data.Dataset.from_tensor_slices((tf.constant(paths, tf.string), labels)),
                      decode, spec)
  if keep:
    ds = ds.cache()
  done, size = 0, 0
  try:
    for decoded, _ in ds:
      done += len(decoded)
      size += 0 if keep else int(tf.reduce_sum(decoded[:, 1]))
  except tf.errors.OpError as e:
    # tf.data says what failed, not where: batches arrive in order, so the
    # culprit is at or after `done`. Pillow names it.
    image_files.name_bad_file(paths[done:])
    raise errors.DataError(
        f"cannot decode one of the images {paths[done]} ... {paths[-1]}: {e.message}. "
        "Remove or replace it.") from None
  return ds if keep else size


def check_files(paths: list[str], channels: int) -> int:
  """Decodes every one of `paths` once, in parallel, keeping nothing; returns their bytes.

  Raises:
    DataError: a file that cannot be decoded, named.
  """
  return decode_files(paths, np.zeros(len(paths), np.int64), channels, None, keep=False)


class FolderSource:
  """A Folder's splits, each input pipeline reading its own share of the files, decoded once.

  Nothing is decoded until an input pipeline first reads its share (after
  the distribution strategy exists: MultiWorkerMirroredStrategy must be
  created before TensorFlow runs any op, and a folder's `data.load` runs
  none). That first read decodes the share, in parallel, naming a bad file,
  and keeps it in memory if `fits` says so (what --cache decides); later
  reads of the same share, every epoch's, come from memory.
  """

  def __init__(self, folder: Folder, info: Any, image_size: Optional[int],
               fits: Callable[[int], bool], train: Split, evaluate: Split):
    """
    Args:
      info: the trainer's DatasetInfo (image_shape, class names, counts).
      fits: whether a share of that many examples may be kept in memory.
      train, evaluate: what to train and evaluate on (`select`).
    """
    self.info = info
    self.folder = folder
    self._splits = {True: train, False: evaluate}
    self._shape = tuple(info.image_shape)
    self._image_size = image_size
    self._fits = fits
    # (train?, pipelines, pipeline) -> that share's decoded batches, in memory;
    # or None once a share too large to keep has been checked.
    self._read = {}

  def num_files(self, split: str) -> int:
    """Files of `split`, the train or the eval split given: the trainer shards by file."""
    return next((len(s.files) for s in self._splits.values() if s.spec == split), 0)

  def holds_decoded(self, train: bool,
                    input_context: Optional[tf.distribute.InputContext]) -> bool:
    """Whether `read` serves this share from memory (a cache would be a second copy)."""
    return self._fits(len(self._share(train, input_context)[0]))

  def read(self, train, input_context, seed):
    """This input pipeline's share of the train or test split.

    A kept share comes in the order of its first read (a random one, drawn
    with that read's seed, for training); the train pipeline's shuffle
    buffer reshuffles it every epoch, exactly as for a cached TFDS dataset.
    A share too large to keep is checked (decoded) once, then streamed: its
    files are shuffled in full every epoch (names only: cheap) and decoded
    one per tf.data call. (Decoded in batches and then split, each whole
    batch would stay in memory while any of its images sat in the shuffle
    buffer: measured, +120 MB over 50,000 images.)
    """
    key = (train, *_pipeline(input_context))
    if self._read.get(key) is not None:
      return self._read[key].unbatch()
    paths, labels = self._share(train, input_context)
    if train:
      order = np.random.default_rng(seed).permutation(len(paths))
      paths, labels = [paths[i] for i in order], labels[order]
    if self.holds_decoded(train, input_context):
      self._read[key] = decode_files(paths, labels, self._shape[2], self._image_size, self._shape)
      return self._read[key].unbatch()
    if key not in self._read:
      decode_files(paths, labels, self._shape[2], self._image_size, keep=False)
      self._read[key] = None
    ds = tf.data.Dataset.from_tensor_slices((tf.constant(paths, tf.string), labels))
    if train:
      ds = ds.shuffle(max(1, len(paths)), seed=seed, reshuffle_each_iteration=True)
    channels, size = self._shape[2], self._image_size
    return ds.map(lambda path, label: (decode_image(tf.io.read_file(path), channels, size), label),
                  num_parallel_calls=AUTOTUNE)

  def _share(self, train: bool, input_context: Optional[tf.distribute.InputContext]):
    """(paths, labels) of this input pipeline's share, by file."""
    split = self._splits[train]
    num_pipelines, pipeline = _pipeline(input_context)
    return share(split.files, num_pipelines, pipeline), share(split.labels, num_pipelines, pipeline)


def _pipeline(input_context: Optional[tf.distribute.InputContext]) -> tuple[int, int]:
  if input_context is None:
    return (1, 0)
  return (input_context.num_input_pipelines, input_context.input_pipeline_id)
