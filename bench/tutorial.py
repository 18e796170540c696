"""The TensorFlow CNN tutorial as one whole process: the baseline of bench/end_to_end.py.

  python bench/tutorial.py --dataset cifar10 --data-dir DIR [--epochs 10]
  python bench/tutorial.py --dataset folder:PATH

What https://www.tensorflow.org/tutorials/images/cnn does, on data read from
disk through tensorflow-datasets instead of `keras.datasets` (which would
download): the whole split is loaded into NumPy (`batch_size=-1`), pixels
divided by 255 (float64 arrays, as the tutorial's `/ 255.0`), the same
model and `compile`, then `model.fit(..., epochs=10,
validation_data=(test_images, test_labels))` at Keras's default batch 32.

Prints one JSON line on stdout: the test accuracy after every epoch and the
seconds spent loading, training and in the whole process (from interpreter
start, as far as Python can see it).
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FOLDER_PREFIX = "folder:"


def tutorial_model(input_shape=(32, 32, 3), num_classes=10):
  """The tutorial's model and compile call, verbatim in substance."""
  import keras  # pylint: disable=import-outside-toplevel
  from keras import layers  # pylint: disable=import-outside-toplevel
  model = keras.Sequential([
      keras.Input(input_shape),
      layers.Conv2D(32, (3, 3), activation="relu"),
      layers.MaxPooling2D((2, 2)),
      layers.Conv2D(64, (3, 3), activation="relu"),
      layers.MaxPooling2D((2, 2)),
      layers.Conv2D(64, (3, 3), activation="relu"),
      layers.Flatten(),
      layers.Dense(64, activation="relu"),
      layers.Dense(num_classes),
  ])
  model.compile(optimizer="adam",
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
  return model


def load(dataset: str, data_dir):
  """(train_images, train_labels), (test_images, test_labels) as NumPy, via TFDS."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  if dataset.startswith(FOLDER_PREFIX):
    builder = tfds.ImageFolder(dataset[len(FOLDER_PREFIX):])
  else:
    builder = tfds.builder(dataset, data_dir=data_dir)
  return tuple(tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))
               for split in ("train", "test"))


def onednn_enabled() -> bool:
  """Whether TensorFlow's CPU kernels are oneDNN's in this process (IsMklEnabled())."""
  from tensorflow.python.util import _pywrap_util_port  # pylint: disable=import-outside-toplevel
  return bool(_pywrap_util_port.IsMklEnabled())


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--dataset", required=True, help="TFDS name (with --data-dir) or folder:PATH.")
  parser.add_argument("--data-dir", help="TFDS data_dir holding the prepared dataset.")
  parser.add_argument("--epochs", type=int, default=10, help="the tutorial's 10 (default).")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  import keras  # pylint: disable=import-outside-toplevel
  keras.utils.set_random_seed(args.seed)
  start = time.perf_counter()
  (train_images, train_labels), (test_images, test_labels) = load(args.dataset, args.data_dir)
  train_images, test_images = train_images / 255.0, test_images / 255.0
  loaded = time.perf_counter()
  model = tutorial_model(train_images.shape[1:], int(train_labels.max()) + 1)
  history = model.fit(train_images, train_labels, epochs=args.epochs,
                      validation_data=(test_images, test_labels), verbose=0)
  done = time.perf_counter()
  print(json.dumps({
      "accuracy": history.history["val_accuracy"],
      "load_s": loaded - start,
      "train_s": done - loaded,
      "train_images": int(len(train_labels)),
      # TensorFlow's own choice of CPU kernels, by CPU (the tutorial sets nothing).
      "onednn": onednn_enabled(),
  }))
  sys.stdout.flush()


if __name__ == "__main__":
  main()
