"""CIFAR-10-sized data from real photographs, for benchmarks that need real learning dynamics.

Real CIFAR-10 cannot be downloaded where this project is developed, and the
trainer's synthetic test data (trainer.synthetic: a faint square under noise)
learns unlike natural images: its accuracy is limited by optimisation, not by
generalisation, so it punishes larger batches and rewards sheer step counts,
the opposite of what real CIFAR-10 measurements show. These data are the
closest real thing at hand.

Ten classes, one per photograph shipped with scikit-image (BSD-licensed test
images: astronaut, cat, coffee, Hubble deep field, immunohistochemistry,
retina, rocket, motorcycle; brick and grass textures, grey). Each example is
a random square crop of 3-12% of the photo's shorter side, resized to 32x32,
randomly flipped, with random saturation, contrast and brightness and pixel
noise. Training crops come from the left three quarters of each photo and
test crops from the right quarter, so the test set shows regions the model
never saw: a generalisation gap, as with CIFAR-10's unseen objects.

Calibration, the tutorial (Adam, batch 32) on 50,000 / 10,000 images:
test accuracy 0.56 after epoch 1 rising unevenly to 0.76 at epoch 10, with
training accuracy 0.86; its published CIFAR-10 curve goes 0.50 to 0.70,
training accuracy ~0.80.

Needs scikit-image (`pip install scikit-image`, or the `bench` extra).
"""

from __future__ import annotations

import numpy as np

CLASS_NAMES = ("astronaut", "cat", "coffee", "galaxies", "tissue", "retina", "rocket",
               "motorcycle", "brick", "grass")
_CROP_FRACTION = (0.03, 0.12)  # of the photo's shorter side
_JITTER = 0.8  # strength of the colour jitter and noise, 0 = none
_TRAIN_PART = 0.75  # training crops from the left 3/4 of each photo, test crops from the rest


def _photos() -> list[np.ndarray]:
  try:
    import skimage.data  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise SystemExit("bench/photos.py needs scikit-image: pip install scikit-image "
                     "(or pip install '.[bench]').") from None
  colour = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(),
            skimage.data.hubble_deep_field(), skimage.data.immunohistochemistry(),
            skimage.data.retina(), skimage.data.rocket(), skimage.data.stereo_motorcycle()[0]]
  grey = [np.stack([image] * 3, axis=-1) for image in (skimage.data.brick(), skimage.data.grass())]
  return colour + grey


def make_arrays(n: int, train: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Returns (images uint8 [n, 32, 32, 3], labels int64 [n]), classes balanced."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  photos = _photos()
  rng = np.random.default_rng(seed)
  labels = np.arange(n, dtype=np.int64) % len(photos)
  rng.shuffle(labels)
  images = np.empty((n, 32, 32, 3), np.uint8)
  for i, k in enumerate(labels):
    photo = photos[k]
    h, w = photo.shape[:2]
    side = int(min(h, w) * rng.uniform(*_CROP_FRACTION))
    boundary = int(w * _TRAIN_PART)
    x_lo, x_hi = (0, boundary - side) if train else (boundary, w - side)
    x = int(rng.integers(x_lo, x_hi + 1))
    y = int(rng.integers(0, h - side + 1))
    crop = Image.fromarray(photo[y:y + side, x:x + side]).resize((32, 32), Image.BILINEAR)
    pixels = np.asarray(crop, np.float32)
    if rng.random() < 0.5:
      pixels = pixels[:, ::-1]
    grey = pixels.mean(axis=-1, keepdims=True)
    pixels = grey + (pixels - grey) * rng.uniform(1 - _JITTER, 1 + _JITTER)  # saturation
    mean = pixels.mean()
    pixels = mean + (pixels - mean) * rng.uniform(1 - _JITTER, 1 + _JITTER)  # contrast
    pixels += rng.uniform(-60, 60) * _JITTER  # brightness, in pixel levels
    pixels += rng.normal(0, 20 * _JITTER, pixels.shape)  # noise, in pixel levels
    images[i] = np.clip(pixels, 0, 255).astype(np.uint8)
  return images, labels
