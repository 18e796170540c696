"""An image folder, converted once into a prepared, sharded TFDS dataset.

The command line is trainer/prepare.py (`python -m trainer.prepare`).

PATH is laid out as for `--dataset folder:PATH` (PATH/{train,test}/<label>/
*.png|jpg) and is checked the same way (trainer/data/folders.py): every header,
then every image decoded once, so a bad file is named here, not mid-run.

Why: training on folder:PATH makes every worker, at every start, list the
folder, read every file's header and decode its share of the files. A
prepared dataset is a few large TFRecord files per split, with shapes, class
names and counts in dataset_info.json: start-up opens a handful of files,
and workers shard by file (TFDS's `ReadConfig(input_context)`). The cost:
one pass here, and a second copy of the data. bench/data_growth.py measures
both ways from 10,000 to 100,000 images.

The images are stored as their files' bytes, not re-encoded: lossless, and
training decodes them with the same `tf.io.decode_image` the folder path
uses, so both give identical pixels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
import os
import re
import time
from typing import Optional

from trainer import config as config_lib
from trainer import errors

VERSION = "1.0.0"
MIN_SHARDS = 32
SHARD_BYTES = 128 * 2**20  # TFRecord files of ~100 MB+ read well from GCS
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # what tfds.builder(NAME) parses back to NAME

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Prepared:
  """What `prepare` wrote."""
  name: str
  data_dir: str
  path: str  # data_dir/name/version
  num_shards: int
  counts: dict[str, int]  # split -> images
  image_shape: tuple  # (H, W, C); H and W None if the images' sizes differ
  seconds: float

  def train_command(self) -> str:
    size = " --image-size N" if self.image_shape[0] is None else ""
    return f"python -m trainer.task --dataset {self.name} --data-dir {self.data_dir}{size}"


def default_num_shards(num_bytes: int, smallest_split: int) -> int:
  """Files per split: max(32, one per 128 MiB of images), at most one per image.

  At least 32 so that up to 32 workers each read whole files of their own
  (TFDS shards by file only if every worker gets one; with fewer files each
  worker reads all of them and keeps every n-th example). Beyond 4 GiB, one
  file per 128 MiB keeps files large enough to read efficiently from GCS
  (TensorFlow's guidance: files of 100 MB or more). TFDS refuses more files
  than a split has examples.

  Args:
    num_bytes: the largest split's size, in bytes.
    smallest_split: the smallest split's number of images.
  """
  return max(1, min(max(MIN_SHARDS, math.ceil(num_bytes / SHARD_BYTES)), smallest_split))


def prepare(root: str, data_dir: str, name: Optional[str] = None,
            num_shards: Optional[int] = None) -> Prepared:
  """Checks the image folder `root` and writes it as the TFDS dataset `name` in `data_dir`.

  Args:
    root: PATH/{train,test}/<label>/*.png|jpg, local or gs://.
    data_dir: the TFDS data_dir to write into, local or gs://.
    name: the dataset's name; default the folder's name.
    num_shards: files per split; default `default_num_shards`.

  Raises:
    ConfigError: a name TFDS cannot use or that a catalog dataset has, too
      many shards.
    DataError: a folder the trainer would refuse, or a dataset of that name
      and version already in data_dir.
  """
  # Imported here so that flag errors answer before TensorFlow loads.
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from trainer.data import folders  # pylint: disable=import-outside-toplevel
  from trainer.storage import api as storage  # pylint: disable=import-outside-toplevel

  start = time.perf_counter()
  name = name or config_lib.TrainConfig(dataset=f"folder:{root}").resolved_model_name()
  _check_name(name, tfds)
  path = os.path.join(data_dir, name, VERSION)
  if tf.io.gfile.exists(path):
    raise errors.DataError(
        f"{path} already holds a prepared dataset {name!r} (version {VERSION}): pass --name "
        f"with another name, or delete {path} to prepare it again.")

  folder = folders.scan(root, f"folder:{root}")
  counts = {split: len(folder.files[split]) for split in folders.SPLITS}
  smallest = min(counts.values())
  if num_shards is not None and not 1 <= num_shards <= smallest:
    raise errors.ConfigError(
        f"--num-shards {num_shards} is invalid: it must be between 1 and {smallest}, the "
        "images in the smallest split (TFDS writes at least one image per file).")
  # Before any image is decoded: a --data-dir that cannot be written failed
  # only when TFDS wrote into it, after the whole decoding pass, with a traceback.
  storage.ensure_writable_dir(data_dir, "--data-dir")
  log.info("Checking %s: decoding %d images once.", root, sum(counts.values()))
  sizes = {split: folders.check_files(folder.files[split], folder.channels)  # bytes
           for split in folders.SPLITS}
  if num_shards is None:
    num_shards = default_num_shards(max(sizes.values()), smallest)

  shape = (*(folder.size or (None, None)), folder.channels)
  png = all(p.lower().endswith(".png") for split in folders.SPLITS for p in folder.files[split])
  features = tfds.features.FeaturesDict({
      # The format names how TFDS would encode arrays; bytes are stored as given.
      "image": tfds.features.Image(shape=shape, encoding_format="png" if png else "jpeg"),
      "label": tfds.features.ClassLabel(names=list(folder.class_names)),
  })

  def split_dataset(split):
    files = tf.data.Dataset.from_tensor_slices(
        {"image": tf.constant(folder.files[split], tf.string), "label": folder.labels[split]})
    return files.map(lambda x: {"image": tf.io.read_file(x["image"]), "label": x["label"]},
                     num_parallel_calls=tf.data.AUTOTUNE)

  log.info("Writing %s to %s: %d files per split.", name, path, num_shards)
  # TFDS prints "Downloading and preparing dataset ..." to stdout, which
  # this is not; stdout is left to the summary and the command to train.
  with contextlib.redirect_stdout(io.StringIO()):
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name, version=VERSION, features=features,
        split_datasets={split: split_dataset(split) for split in folders.SPLITS},
        data_dir=data_dir, description=f"Images of {root}, written by trainer.prepare.",
        download_config=tfds.download.DownloadConfig(num_shards=num_shards))
  return Prepared(name=name, data_dir=data_dir, path=path, num_shards=num_shards, counts=counts,
                  image_shape=shape, seconds=time.perf_counter() - start)


def _check_name(name: str, tfds) -> None:
  def in_catalog(candidate: str) -> bool:
    try:
      tfds.builder_cls(candidate)
    except tfds.core.registered.DatasetNotFoundError:
      return False
    return True

  if not _NAME.match(name):
    suggestion = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")
    suggestion = suggestion if suggestion[:1].isalpha() else f"images_{suggestion}"
    if in_catalog(suggestion):  # CIFAR10 -> cifar10, which the check below refuses
      suggestion += "_images"
    raise errors.ConfigError(
        f"{name!r} is not a dataset name TFDS can read back (lower-case letters, digits and "
        f"'_', starting with a letter): pass --name, e.g. --name {suggestion}.")
  if in_catalog(name):
    raise errors.ConfigError(
        f"{name!r} is a TFDS catalog dataset, and `--dataset {name}` would read it with the "
        f"catalog's definition: pass --name with another name, e.g. --name {name}_images.")
