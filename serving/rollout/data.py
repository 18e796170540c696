"""The held-out split, read by the training's own data code (trainer.data), in batches of uint8 images.

Exactly what training evaluates on: the same TFDS split or image folder,
decoded and resized (--image-size) by the same Source, so the rollout's
accuracy is the one training reported, now measured through the server.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Optional

import numpy as np

from serving.rollout.errors import UsageError


@dataclasses.dataclass
class Split:
  description: dict  # what the record says of the data
  class_names: tuple[str, ...]
  image_shape: tuple[int, int, int]
  size: int  # images
  _source: object
  _batch: int

  def batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    dataset = self._source.read(False, None, 0).batch(self._batch)  # one pass, in file order
    for images, labels in dataset.as_numpy_iterator():
      yield images, labels


def load(data: str, dataset: str, split: str, image_size: Optional[int], batch: int) -> Split:
  """The split to evaluate on.

  Args:
    data: a TFDS data_dir (local or gs://) holding `dataset` prepared, or
      folder:PATH for PATH/{train,test}/<label>/*.png|jpg (`split` selects
      from its train/ and test/ as trainer.task's --eval-split does).
    dataset: the TFDS name, e.g. cifar10 (ignored for folder:PATH).
    split: the held-out split, TFDS slicing allowed (test, test[:50%]).
  """
  from trainer import config as config_lib  # pylint: disable=import-outside-toplevel
  from trainer import errors as trainer_errors  # pylint: disable=import-outside-toplevel
  from trainer.data import pipeline  # pylint: disable=import-outside-toplevel
  folder = config_lib.folder_path(data) is not None
  config = config_lib.TrainConfig(
      dataset=data if folder else dataset, data_dir=None if folder else data, eval_split=split,
      image_size=image_size, cache="none")
  try:
    source = pipeline.load(config)
  except trainer_errors.DataError as e:
    raise UsageError(f"--data {data}: {e}") from e
  info = source.info
  description = {"data": data, "dataset": None if folder else dataset, "split": split,
                 "images": info.num_eval_examples, "image_size": image_size,
                 "class_names": list(info.class_names)}
  return Split(description, tuple(info.class_names), info.image_shape, info.num_eval_examples,
               source, batch)
