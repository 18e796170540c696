"""Learnable synthetic image data, written the way real data is stored.

Tests, benchmarks and cluster smoke tests need data that (a) goes through the
production loading code and (b) can actually be learned, so that an accuracy
bar means something. `tfds.testing.mock_data` gives random pixels and random
labels; nothing can learn those.

Each class k gets a colour tint and a bright square at a class-specific
position, both jittered, on top of uniform noise. The tutorial CNN separates
the classes within a few epochs, but not in the first few steps, so accuracy
bars and time-to-accuracy measurements have a curve to measure.

The command line is trainer/data/synthetic.py (`python -m trainer.synthetic`).
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Optional

import numpy as np

# Class names of the real datasets, so synthetic stand-ins label like them.
CLASS_NAMES = {
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                "ship", "truck"),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"),
}

_CHUNK = 1024  # images generated at a time

# Per-class RGB tint, as a fraction of full scale. Ten well-separated hues,
# one per class: make_arrays draws at most MAX_CLASSES classes.
_PALETTE = np.array([
    [1.0, 0.2, 0.2], [0.2, 1.0, 0.2], [0.2, 0.2, 1.0], [1.0, 1.0, 0.2],
    [1.0, 0.2, 1.0], [0.2, 1.0, 1.0], [1.0, 0.6, 0.2], [0.6, 0.2, 1.0],
    [0.6, 1.0, 0.6], [0.9, 0.9, 0.9]], dtype=np.float32)
MAX_CLASSES = len(_PALETTE)


def make_arrays(n: int, image_shape: tuple[int, int, int], num_classes: int = 10,
                seed: int = 0, noise: float = 0.7, signal: float = 0.4,
                tint: float = 0.08) -> tuple[np.ndarray, np.ndarray]:
  """Returns (images uint8 [n, H, W, C], labels int64 [n]), classes balanced.

  Args:
    n: number of examples.
    image_shape: (H, W, C), C in {1, 3}.
    num_classes: at most MAX_CLASSES (10).
    seed: the data are a pure function of the arguments.
    noise: amplitude of the uniform background noise, in [0, 1].
    signal: brightness of the class square over the noise, in [0, 1]; lower is
      harder (0.25 takes the tutorial CNN several epochs over 8,000 images).
    tint: strength of the faint whole-image class tint, in [0, 1]; with 0 the
      square is the only cue.
  """
  h, w, c = image_shape
  rng = np.random.default_rng(seed)
  labels = np.arange(n, dtype=np.int64) % num_classes
  rng.shuffle(labels)
  side = max(4, h // 4)
  # Class k's square sits on a 4x3 grid of anchor positions.
  anchors = [((k // 4) * (h - side) // 2, (k % 4) * (w - side) // 3) for k in range(num_classes)]
  jitter = rng.integers(-2, 3, size=(n, 2))
  images = np.empty((n, h, w, c), np.uint8)
  # In chunks: float32 copies of all images at once would make generating the
  # data, not training on it, the process's peak memory.
  for start in range(0, n, _CHUNK):
    chunk = rng.uniform(0.0, noise, size=(min(_CHUNK, n - start), h, w, c)).astype(np.float32)
    for j, image in enumerate(chunk):
      i = start + j
      k = labels[i]
      y0 = int(np.clip(anchors[k][0] + jitter[i, 0], 0, h - side))
      x0 = int(np.clip(anchors[k][1] + jitter[i, 1], 0, w - side))
      colour = _PALETTE[k][:c] if c == 3 else np.array([0.6 + 0.04 * k], np.float32)
      # Weak cues under strong noise. The tutorial CNN at batch 128 on 2,000
      # images, measured over four seeds: ~39% test accuracy after one epoch,
      # 70-98% after three, >=98% after six.
      image += tint * colour  # a faint whole-image tint...
      image[y0:y0 + side, x0:x0 + side] += signal * colour  # ...and a brighter square
    images[start:start + len(chunk)] = np.clip(chunk * 255.0, 0, 255).astype(np.uint8)
  return images, labels


# split name -> (images uint8 [n, H, W, C], labels int64 [n])
Splits = dict[str, tuple[np.ndarray, np.ndarray]]


def write_tfds(name: str, data_dir: str, num_train: int = 2000, num_test: int = 500,
               seed: int = 0, num_shards: Optional[int] = None, signal: float = 0.4,
               tint: float = 0.08) -> str:
  """Writes learnable data as the prepared TFDS dataset `name` in `data_dir`.

  Args:
    num_shards: files per split; None lets TFDS choose (one, for small data).
    signal, tint: the class cues' strengths (see make_arrays); lower is harder.

  Returns:
    The dataset's directory (data_dir/name/version).
  """
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  features = tfds.builder(name).info.features
  shape, num_classes = features["image"].shape, features["label"].num_classes
  splits = {split: make_arrays(n, shape, num_classes, seed=split_seed, signal=signal, tint=tint)
            for split, n, split_seed in (("train", num_train, seed), ("test", num_test, seed + 1))}
  return store_tfds(name, data_dir, splits, num_shards=num_shards)


def store_tfds(name: str, data_dir: str, splits: Splits, class_names: Optional[list[str]] = None,
               num_shards: Optional[int] = None) -> str:
  """Stores arrays as the prepared TFDS dataset `name` (a registered one) in `data_dir`.

  The features and version are those of the registered builder (cifar10,
  mnist, fashion_mnist, ...), so `tfds.load(name, data_dir=data_dir,
  download=False)` reads them exactly as it would read the real thing.

  Args:
    class_names: the label names; default: the real dataset's.
    num_shards: files per split; None lets TFDS choose (one, for small data).

  Returns:
    The dataset's directory (data_dir/name/version).
  """
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  reference = tfds.builder(name)
  features = reference.info.features
  if class_names or name in CLASS_NAMES:
    # The registered builders learn their names from the downloaded files.
    features["label"].names = list(class_names or CLASS_NAMES[name])
  datasets = {}
  for split, (images, labels) in splits.items():
    columns = {"image": images, "label": labels}
    if "id" in features:
      columns["id"] = np.array([f"{split}_{i:05d}".encode() for i in range(len(labels))])
    datasets[split] = tf.data.Dataset.from_tensor_slices(columns)
  # TFDS prints "Downloading and preparing dataset ..." to stdout, which this
  # is not (as trainer/data/prepared.py); stdout is left to the caller.
  with contextlib.redirect_stdout(io.StringIO()):
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name, version=str(reference.VERSION), features=features,
        split_datasets=datasets, data_dir=data_dir,
        description="Learnable synthetic data written by trainer.synthetic.",
        download_config=tfds.download.DownloadConfig(num_shards=num_shards))
  return os.path.join(data_dir, name, str(reference.VERSION))


def write_image_folder(root: str, image_shape: tuple[int, int, int] = (32, 32, 3),
                       class_names: Optional[list[str]] = None, num_train: int = 600,
                       num_test: int = 200, seed: int = 0, signal: float = 0.4,
                       tint: float = 0.08) -> str:
  """Writes learnable PNGs as root/{train,test}/<class>/<n>.png.

  Args:
    signal, tint: the class cues' strengths (see make_arrays); lower is harder.

  Returns:
    `root`.
  """
  class_names = class_names or [f"class_{k}" for k in range(10)]
  splits = {split: make_arrays(n, image_shape, len(class_names), seed=split_seed,
                               signal=signal, tint=tint)
            for split, n, split_seed in (("train", num_train, seed), ("test", num_test, seed + 1))}
  return store_image_folder(root, splits, class_names)


def store_image_folder(root: str, splits: Splits, class_names: list[str]) -> str:
  """Stores arrays as PNGs, root/<split>/<class>/<n>.png; returns `root`."""
  from PIL import Image  # pylint: disable=import-outside-toplevel

  for split, (images, labels) in splits.items():
    for name in class_names:
      os.makedirs(os.path.join(root, split, name), exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):
      pixels = image[..., 0] if image.shape[-1] == 1 else image
      Image.fromarray(pixels).save(os.path.join(root, split, class_names[label], f"{i:05d}.png"))
  return root
