"""Data: the real TFDS and image-folder loading paths, sharding, augmentation, validation."""

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import NUM_TEST, NUM_TRAIN, REPO
from trainer import presets
from trainer.data import pipeline as data
from trainer import errors
from trainer.data import synthetic


def _config(**kw):
  return presets.preset("cifar10", **kw)


def _digests(ds):
  return sorted(hashlib.sha1(image.numpy().tobytes()).hexdigest() + str(int(label))
                for image, label in ds)


def test_tfds_dataset_loads_through_catalog_name(tfds_dir):
  source = data.load(_config(data_dir=tfds_dir))
  info = source.info
  assert info.image_shape == (32, 32, 3)
  assert info.class_names[:3] == ("airplane", "automobile", "bird")
  assert (info.num_train_examples, info.num_eval_examples) == (NUM_TRAIN, NUM_TEST)
  image, label = next(iter(source.read(True, None, 0)))
  assert image.dtype == tf.uint8 and image.shape == (32, 32, 3)
  assert label.dtype == tf.int64


def test_mnist_is_28x28_grey(tfds_dir):
  info = data.load(_config(dataset="mnist", data_dir=tfds_dir)).info
  assert info.image_shape == (28, 28, 1)
  assert info.num_classes == 10


@pytest.fixture(scope="module")
def sharded_tfds(tmp_path_factory):
  """cifar10 with 4 files per split, so sharding by file is possible."""
  data_dir = str(tmp_path_factory.mktemp("sharded"))
  synthetic.write_tfds("cifar10", data_dir, num_train=200, num_test=90, num_shards=4)
  return data_dir


@pytest.mark.parametrize("pipelines", [2, 3, 5])
def test_each_eval_example_goes_to_exactly_one_worker(sharded_tfds, pipelines):
  """By file (2 and 3 pipelines over 4 files) or by example (5 pipelines)."""
  source = data.load(_config(data_dir=sharded_tfds))
  whole = _digests(source.read(False, None, 0))
  parts = []
  for i in range(pipelines):
    ctx = tf.distribute.InputContext(num_input_pipelines=pipelines, input_pipeline_id=i,
                                     num_replicas_in_sync=pipelines)
    part = _digests(source.read(False, ctx, 0))
    assert part, f"pipeline {i} got no examples"
    parts += part
  assert sorted(parts) == whole
  assert len(whole) == 90


def test_train_pipeline_batches_per_replica_and_repeats(tfds_dir):
  config = _config(data_dir=tfds_dir, batch_size=64)
  ctx = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                   num_replicas_in_sync=2)
  ds = data.train_dataset(data.load(config), config, ctx)
  batches = list(ds.take(NUM_TRAIN // 32 + 3))  # more than one epoch: it repeats
  assert all(b[0].shape == (32, 32, 32, 3) for b in batches)
  assert batches[0][0].dtype == tf.uint8


def test_eval_pipeline_covers_split_once(tfds_dir):
  config = _config(data_dir=tfds_dir, batch_size=128)
  labels = np.concatenate([l.numpy() for _, l in data.eval_dataset(data.load(config), config)])
  assert len(labels) == NUM_TEST


def _is_shifted_window(original, result, pad=4, flips=True):
  """True if `result` is a (flipped) window of `original` zero-padded by `pad`."""
  padded = np.pad(original, ((pad, pad), (pad, pad), (0, 0)))
  h, w, _ = original.shape
  for dy in range(2 * pad + 1):
    for dx in range(2 * pad + 1):
      window = padded[dy:dy + h, dx:dx + w]
      if np.array_equal(window, result) or (flips and np.array_equal(window[:, ::-1], result)):
        return True
  return False


def test_augment_directly_is_a_flipped_padded_crop_per_image():
  images = np.random.default_rng(1).integers(1, 256, (64, 32, 32, 3), dtype=np.uint8)
  out, labels = data.augment(tf.constant(images), tf.range(64))
  out = out.numpy()
  assert out.dtype == np.uint8 and out.shape == images.shape
  assert list(labels.numpy()) == list(range(64))
  assert all(_is_shifted_window(i, o) for i, o in zip(images, out))
  flipped = sum(not _is_shifted_window(i, o, flips=False) for i, o in zip(images, out))
  assert 10 < flipped < 54


def test_augment_draws_a_crop_and_flip_per_image_not_per_batch():
  """64 copies of one image: a transform drawn once per batch gives 1 distinct output.

  Per image, each of the 64 draws is one of 9 x 9 offsets x 2 flips = 162 outcomes,
  so about 52 distinct outputs are expected and fewer than 30 is vanishingly unlikely.
  """
  image = np.random.default_rng(3).integers(1, 256, (32, 32, 3), dtype=np.uint8)
  batch = np.repeat(image[np.newaxis], 64, axis=0)
  out = data.augment(tf.constant(batch), tf.range(64))[0].numpy()
  assert all(_is_shifted_window(image, o) for o in out)
  assert len({o.tobytes() for o in out}) >= 30


def test_augment_inside_tf_data_matches_direct_semantics():
  images = np.random.default_rng(2).integers(1, 256, (16, 32, 32, 3), dtype=np.uint8)
  ds = tf.data.Dataset.from_tensor_slices((images, np.zeros(16, np.int64))).batch(8).map(data.augment)
  results = np.concatenate([batch.numpy() for batch, _ in ds])
  assert all(_is_shifted_window(i, o) for i, o in zip(images, results))


def test_train_pipeline_augments_when_asked(tfds_dir):
  config = _config(data_dir=tfds_dir, batch_size=32, augment=True, shuffle_buffer=1)
  plain = _config(data_dir=tfds_dir, batch_size=32, shuffle_buffer=1)
  source = data.load(config)
  a = next(iter(data.train_dataset(source, config)))[0].numpy()
  b = next(iter(data.train_dataset(source, plain)))[0].numpy()
  assert a.shape == b.shape == (32, 32, 32, 3)
  assert all(_is_shifted_window(x, y) for x, y in zip(b, a))  # same images, augmented
  assert not np.array_equal(a, b)


# ----------------------------------------------------------------- folders


def test_image_folder_loads_labels_from_directory_names(image_folder):
  source = data.load(_config(dataset=f"folder:{image_folder}"))
  info = source.info
  assert info.class_names == ("shape_0", "shape_1", "shape_2", "shape_3")
  assert info.image_shape == (32, 32, 3)
  assert (info.num_train_examples, info.num_eval_examples) == (800, 200)
  assert info.name == os.path.basename(image_folder)
  image, label = next(iter(source.read(False, None, 0)))
  assert image.shape == (32, 32, 3) and image.dtype == tf.uint8


def _folder(tmp_path, layout):
  """layout: {split: {label: [(w, h, mode) or bytes, ...]}}"""
  from PIL import Image
  for split, labels in layout.items():
    for label, items in labels.items():
      os.makedirs(tmp_path / split / label, exist_ok=True)
      for i, item in enumerate(items):
        path = tmp_path / split / label / f"{i}.png"
        if isinstance(item, bytes):
          path.write_bytes(item)
        else:
          Image.new(item[2], item[:2]).save(path)
  return f"folder:{tmp_path}"


OK = (32, 32, "RGB")


def test_folder_resizes_when_asked(tmp_path):
  dataset = _folder(tmp_path, {s: {"a": [OK, (40, 30, "RGB")], "b": [OK]} for s in ("train", "test")})
  with pytest.raises(errors.DataError, match=r"40x30 pixels .*--image-size"):
    data.load(_config(dataset=dataset))
  source = data.load(_config(dataset=dataset, image_size=32))
  shapes = {tuple(image.shape) for image, _ in source.read(True, None, 0)}
  assert shapes == {(32, 32, 3)}


def test_folder_of_grey_images_has_one_channel(tmp_path):
  grey = (28, 28, "L")
  dataset = _folder(tmp_path, {s: {"a": [grey], "b": [grey]} for s in ("train", "test")})
  assert data.load(_config(dataset=dataset)).info.image_shape == (28, 28, 1)


def test_folder_of_jpegs_and_pngs_mixing_grey_and_colour_is_rgb(tmp_path):
  from PIL import Image
  for split in ("train", "test"):
    for label, mode in (("a", "L"), ("b", "RGB")):
      os.makedirs(tmp_path / split / label)
      Image.new(mode, (24, 20), 200).save(tmp_path / split / label / "0.jpg", quality=95)
      Image.new("L", (24, 20), 100).save(tmp_path / split / label / "1.png")
  source = data.load(_config(dataset=f"folder:{tmp_path}"))
  assert source.info.image_shape == (20, 24, 3)
  images = {int(label): [] for label in (0, 1)}
  for image, label in source.read(False, None, 0):
    images[int(label)].append(image.numpy())
  assert all(image.shape == (20, 24, 3) for pair in images.values() for image in pair)
  assert sorted(int(image.mean()) for image in images[0]) == [100, 200]  # grey, as RGB


def _jpegs(tmp_path):
  """JPEG files of the kinds cameras, scanners and converters write, as {name: path}."""
  from PIL import Image
  rng = np.random.default_rng(0)
  pixels = rng.integers(0, 256, (20, 24, 3), np.uint8)
  rgb, grey = Image.fromarray(pixels), Image.fromarray(pixels[..., 0])
  exif = Image.Exif()
  exif[0x010E] = "x" * 8000  # ImageDescription: an APP1 segment larger than the bytes read
  saves = {
      "baseline": (rgb, {}), "grey": (grey, {}), "cmyk": (rgb.convert("CMYK"), {}),
      "progressive": (rgb, {"progressive": True}), "optimized": (rgb, {"optimize": True}),
      "subsampled 4:2:0": (rgb, {"subsampling": 2}), "comment": (grey, {"comment": b"scanned"}),
      "restart markers": (rgb, {"restart_marker_blocks": 1}), "icc profile": (rgb, {"icc_profile": b"\0" * 3000}),
      "large exif (Pillow reads it)": (rgb, {"exif": exif}),
  }
  paths = {}
  for name, (image, kwargs) in saves.items():
    paths[name] = str(tmp_path / f"{name}.jpg")
    image.save(paths[name], quality=90, **kwargs)
  return paths


def test_jpeg_headers_read_from_their_first_bytes_agree_with_pillow(tmp_path):
  """Size and grey-or-colour of each kind of JPEG, as Pillow's open reports them (the scan of
  a folder reads JPEG frame headers itself, 5x as fast on real CIFAR-10's 60,000 files)."""
  from PIL import Image
  from trainer.data import image_files
  for name, path in _jpegs(tmp_path).items():
    with Image.open(path) as image:
      assert image_files.header(path) == ((image.size[1], image.size[0]), image.mode == "L"), name
    with open(path, "rb") as f:
      frame = image_files.jpeg_frame(f.read(image_files.HEAD_BYTES))
    # Read from the first bytes, except past a segment longer than those: Pillow then.
    assert (frame is None) == (name == "large exif (Pillow reads it)"), name


@pytest.mark.parametrize("change", [
    lambda sof: sof[:4] + b"\x0c" + sof[5:],  # 12-bit samples
    lambda sof: sof[:9] + b"\x02" + sof[10:],  # two components
], ids=["12-bit", "2 components"])
def test_a_jpeg_frame_that_pillow_refuses_is_named_by_the_scan(tmp_path, change):
  """Pillow cannot open these (JpegImagePlugin.SOF raises; Image.open reports it as below),
  so neither can the trainer: the scan refuses them before any worker starts."""
  from PIL import Image
  dataset = _folder(tmp_path, {s: {"a": [OK], "b": [OK]} for s in ("train", "test")})
  path = tmp_path / "train" / "b" / "odd.jpg"
  Image.new("RGB", (32, 32), 50).save(path)
  raw = path.read_bytes()
  sof = raw.index(b"\xff\xc0")
  path.write_bytes(raw[:sof] + change(raw[sof:sof + 10]) + raw[sof + 10:])
  with pytest.raises(errors.DataError,
                     match=r"corrupt or unreadable image .*train/b/odd\.jpg: cannot identify image file"):
    data.load(_config(dataset=dataset))


def test_a_jpeg_cut_after_its_frame_header_is_named_when_its_worker_decodes_it(tmp_path):
  """The scan reads headers only, so the file passes it; its first read names it."""
  from PIL import Image
  dataset = _folder(tmp_path, {s: {"a": [OK], "b": [OK]} for s in ("train", "test")})
  path = tmp_path / "train" / "b" / "cut.jpg"
  Image.new("RGB", (32, 32), 50).save(path)
  raw = path.read_bytes()
  path.write_bytes(raw[:raw.index(b"\xff\xda")])  # everything up to the scan: no pixels
  source = data.load(_config(dataset=dataset))
  assert source.info.image_shape == (32, 32, 3)
  with pytest.raises(errors.DataError, match=r"corrupt or unreadable image .*train/b/cut\.jpg"):
    source.read(True, None, 0)


def test_a_png_cut_inside_its_header_is_named(tmp_path):
  """20 of IHDR's 26 bytes: struct.error, a traceback, before it was counted as unreadable."""
  dataset = _folder(tmp_path, {s: {"a": [OK], "b": [OK]} for s in ("train", "test")})
  whole = next((tmp_path / "train" / "a").iterdir()).read_bytes()
  (tmp_path / "train" / "b" / "cut.png").write_bytes(whole[:20])
  with pytest.raises(errors.DataError, match=r"corrupt or unreadable image .*train/b/cut\.png"):
    data.load(_config(dataset=dataset))


def test_a_relative_folder_is_named_after_the_directory_it_is(tmp_path, monkeypatch):
  """folder:. was named '.', which the model-name check then refused as a --model-name never given."""
  root = tmp_path / "flowers"
  (root / "sub").mkdir(parents=True)
  monkeypatch.chdir(root / "sub")
  assert [_config(dataset=d).resolved_model_name() for d in ("folder:.", "folder:./", "folder:..")] == [
      "sub", "sub", "flowers"]
  assert _config(dataset="folder:gs://bucket/images/").resolved_model_name() == "images"
  _config(dataset="folder:.").validate()


@pytest.mark.parametrize("layout, message", [
    ({"train": {"a": [], "b": []}, "test": {"a": [OK], "b": [OK]}},
     r"no \.png or \.jpg images under train/<label>/"),
    ({"train": {"a": [OK], "b": [OK]}, "test": {"a": [OK], "c": [OK]}},
     r"different label sets \(only in train: \['b'\]; only in test: \['c'\]\)"),
    ({"train": {"a": [OK], "b": [OK, b"\x89PNG\r\n\x1a\nnot really"]}, "test": {"a": [OK], "b": [OK]}},
     r"corrupt or unreadable image .*train/b/1\.png"),
    ({"train": {"a": [OK], "b": [OK]}}, r"has no test/ directory"),
])
def test_bad_folders_are_named(tmp_path, layout, message):
  with pytest.raises(errors.DataError, match=message):
    data.load(_config(dataset=_folder(tmp_path, layout)))


def test_missing_folder(tmp_path):
  with pytest.raises(errors.DataError, match="no such directory"):
    data.load(_config(dataset=f"folder:{tmp_path}/nope"))


def _context(pipelines, index):
  return tf.distribute.InputContext(num_input_pipelines=pipelines, input_pipeline_id=index,
                                    num_replicas_in_sync=pipelines)


@pytest.mark.parametrize("train", [True, False])
def test_two_workers_folder_shares_are_disjoint_and_cover_every_file_once(image_folder, train):
  config = _config(dataset=f"folder:{image_folder}")
  whole = _digests(data.load(config).read(train, None, 0))
  shares = []
  for worker in (0, 1):
    source = data.load(config)  # as each worker's process does
    assert source.holds_decoded(train, _context(2, worker))  # its share fits in memory
    shares.append(_digests(source.read(train, _context(2, worker), 0)))
  assert len(whole) == (800 if train else 200)
  assert not set(shares[0]) & set(shares[1])
  assert sorted(shares[0] + shares[1]) == whole
  assert len(shares[0]) == len(shares[1])  # by file: every other file
  assert "each of 2 workers reads its own shard (by file)" in data.describe(source, config, 2)


def _labels_of(source, train):
  return np.array([int(label) for _, label in source.read(train, None, 0)])


def test_folder_splits_slice_as_tfds_splits_do_each_slice_holding_every_class(image_folder):
  """--train-split and --eval-split take TFDS's grammar for a folder too (they were ignored: a
  smoke run of a folder read it whole); a slice is drawn across the labels, not label by label."""
  config = _config(dataset=f"folder:{image_folder}", train_split="train[:10%]",
                   eval_split="test[-50:]")
  source = data.load(config)
  assert (source.info.num_train_examples, source.info.num_eval_examples) == (80, 50)
  train, test = _labels_of(source, True), _labels_of(source, False)
  assert len(train) == 80 and len(test) == 50
  assert set(train) == set(test) == {0, 1, 2, 3}  # in label order, train[:10%] would be shape_0 only
  smoke = data.load(presets.preset("smoke", dataset=f"folder:{image_folder}")).info
  assert (smoke.num_train_examples, smoke.num_eval_examples) == (80, 20)


def test_folder_slices_are_fixed_disjoint_and_together_the_whole_split(image_folder, tmp_path):
  """train[:90%] and train[90%:] part the same files on every load, worker and seed: a
  validation split that never leaks into training."""
  def digests(spec, root=image_folder, seed=0):
    source = data.load(_config(dataset=f"folder:{root}", train_split=spec, seed=seed))
    return _digests(source.read(True, None, seed))

  head, tail, whole = digests("train[:90%]"), digests("train[90%:]"), digests("train")
  assert (len(head), len(tail)) == (720, 80)
  assert not set(head) & set(tail) and sorted(head + tail) == whole
  assert digests("train[:90%]", seed=7) == head  # not drawn with --seed
  moved = shutil.copytree(image_folder, str(tmp_path / "elsewhere"))
  assert digests("train[90%:]", root=moved) == tail  # nor with the folder's own path
  config = _config(dataset=f"folder:{image_folder}", train_split="train[:90%]")
  source = data.load(config)
  assert source.num_files("train[:90%]") == 720
  assert "each of 2 workers reads its own shard (by file)" in data.describe(source, config, 2)


@pytest.mark.parametrize("flags, message", [
    ({"eval_split": "validation"},
     r"--eval-split 'validation' is not a split of folder:.*: it has test, train \(Unknown split"),
    ({"train_split": "train[:abc]"}, r"--train-split 'train\[:abc\]' is not a split of folder:"),
    ({"eval_split": "test[10:5]"}, r"--eval-split 'test\[10:5\]' of folder:.* has no examples\.$"),
    # TFDS's grammar raises NotImplementedError for a slice of `all`: it was a traceback.
    ({"train_split": "all[:90%]"}, r"--train-split 'all\[:90%\]' is not a split of folder:"),
])
def test_a_folder_split_that_selects_nothing_is_named(image_folder, flags, message):
  with pytest.raises(errors.DataError, match=message):
    data.load(_config(dataset=f"folder:{image_folder}", **flags))


def _pillow_pixels(path, channels=3):
  from PIL import Image
  with Image.open(path) as image:
    pixels = np.asarray(image.convert("RGB" if channels == 3 else "L"))
  return pixels.reshape(pixels.shape[:2] + (channels,))


def test_folder_is_read_and_decoded_once(tmp_path):
  """The first read decodes every file of the split; later epochs never touch the files."""
  root = synthetic.write_image_folder(str(tmp_path / "images"), num_train=120, num_test=40)
  config = _config(dataset=f"folder:{root}", batch_size=32)
  source = data.load(config)
  first = {train: _digests(source.read(train, None, 0)) for train in (True, False)}
  # The pixels and labels are the files' own: label k is the k-th label folder.
  expected = {}
  for split in ("train", "test"):
    for k, label in enumerate(sorted(os.listdir(os.path.join(root, split)))):
      for name in os.listdir(os.path.join(root, split, label)):
        expected.setdefault(split, []).append(
            hashlib.sha1(_pillow_pixels(os.path.join(root, split, label, name)).tobytes()).hexdigest()
            + str(k))
  shutil.rmtree(root)
  assert first[False] == _digests(source.read(False, None, 0)) == sorted(expected["test"])
  assert first[True] == _digests(source.read(True, None, 0)) == sorted(expected["train"])
  batches = list(data.train_dataset(source, config).take(3 * 120 // 32))  # three epochs
  assert len(batches) == 11 and all(b[0].shape == (32, 32, 32, 3) for b in batches)
  assert sum(len(labels) for _, labels in data.eval_dataset(source, config)) == 40


def test_folder_trains_from_memory_under_a_strategy_once_read(tmp_path):
  """Under a strategy, epochs after the first read come from memory: the files can go."""
  from trainer.training import train
  root = synthetic.write_image_folder(str(tmp_path / "images"), num_train=256, num_test=64)
  config = _config(dataset=f"folder:{root}", batch_size=64, epochs=1, job_dir=str(tmp_path / "job"),
                   log_every_steps=2, steps_per_execution=2)
  source = data.load(config)
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  assert train.run(config, strategy=strategy, datasets=source)["replicas"] == 2
  shutil.rmtree(root)
  again = dataclasses.replace(config, epochs=3)  # resumes at epoch 2, same source
  metrics = train.run(again, strategy=strategy, datasets=source)
  assert metrics["epochs"] == 3 and metrics["test_examples"] == 64


def test_folder_streams_the_same_examples_when_they_do_not_fit(image_folder):
  kept = data.load(_config(dataset=f"folder:{image_folder}"))
  streamed = data.load(_config(dataset=f"folder:{image_folder}", cache="none"))
  assert not streamed.holds_decoded(True, None)
  for train in (True, False):
    assert _digests(streamed.read(train, None, 0)) == _digests(kept.read(train, None, 0))
  parts = [_digests(streamed.read(False, _context(3, i), 0)) for i in range(3)]
  assert sorted(sum(parts, [])) == _digests(kept.read(False, None, 0))


def _truncated_png(tmp_path):
  """A PNG whose header is intact and whose pixel data stop halfway."""
  from PIL import Image
  path = tmp_path / "whole.png"
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)).save(path)
  data_ = path.read_bytes()
  path.unlink()
  return data_[:len(data_) // 2]


def test_each_worker_decodes_only_its_share_and_names_a_bad_file(tmp_path):
  """The files sort as a/0..3, b/0..3: worker 0 decodes a/0, a/2, b/0, b/2; b/3 is worker 1's.

  Its header is intact, so data.load (headers only) passes on both workers.
  """
  dataset = _folder(tmp_path, {"train": {"a": [OK] * 4, "b": [OK] * 3 + [_truncated_png(tmp_path)]},
                               "test": {"a": [OK], "b": [OK]}})
  source = data.load(_config(dataset=dataset))
  assert len(list(source.read(True, _context(2, 0), 0))) == 4
  with pytest.raises(errors.DataError, match=r"corrupt or unreadable image .*train/b/3\.png: .*"
                     r"Remove or replace the file\."):
    source.read(True, _context(2, 1), 0)
  with pytest.raises(errors.DataError, match=r"corrupt or unreadable image .*train/b/3\.png"):
    source.read(True, None, 0)


def test_loading_runs_no_tensorflow_op_so_a_multi_worker_strategy_can_follow(tfds_dir, image_folder):
  """MultiWorkerMirroredStrategy refuses to start once TensorFlow has run an op, and
  train.run loads (checks) the data before it creates the strategy."""
  code = f"""
import json, os, socket
with socket.socket() as s:
  s.bind(("127.0.0.1", 0))
  port = s.getsockname()[1]
os.environ["TF_CONFIG"] = json.dumps({{"cluster": {{"worker": [f"127.0.0.1:{{port}}"]}},
                                      "task": {{"type": "worker", "index": 0}}}})
from trainer import presets
from trainer.data import pipeline as data
data.load(presets.preset("cifar10", dataset="folder:{image_folder}"))
data.load(presets.preset("cifar10", data_dir="{tfds_dir}"))
import tensorflow as tf
tf.distribute.MultiWorkerMirroredStrategy()
print("strategy created")
"""
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0 and "strategy created" in proc.stdout, proc.stderr[-3000:]


# -------------------------------------------------------------------- TFDS


def test_unknown_dataset_suggests_a_name():
  with pytest.raises(errors.DataError, match=r"unknown dataset 'cifar100x'.*did you mean cifar100"):
    data.load(_config(dataset="cifar100x"))


def test_data_dir_without_the_dataset_says_how_to_prepare_it(tmp_path):
  with pytest.raises(errors.DataError, match=rf"does not hold dataset 'mnist'.*tfds build mnist --data_dir {tmp_path}"):
    data.load(_config(dataset="mnist", data_dir=str(tmp_path)))


def test_missing_split_lists_the_splits(tfds_dir):
  with pytest.raises(errors.DataError, match=r"--eval-split 'validation' is not a split.*test, train"):
    data.load(_config(data_dir=tfds_dir, eval_split="validation"))


def test_non_image_dataset_is_refused():
  # 'imdb_reviews' has text and label features: the check happens on the
  # builder's feature spec, before any data is read or downloaded.
  with pytest.raises(errors.DataError, match="not an image-classification dataset"):
    data.load(_config(dataset="imdb_reviews", data_dir="/nonexistent"))


def test_fashion_mnist_loads_with_its_class_names(tmp_path):
  """Any TFDS image-classification set works, not only the two the tests train on."""
  synthetic.write_tfds("fashion_mnist", str(tmp_path), num_train=64, num_test=32)
  info = data.load(_config(dataset="fashion_mnist", data_dir=str(tmp_path))).info
  assert info.image_shape == (28, 28, 1)
  assert info.class_names[:2] == ("T-shirt/top", "Trouser")
  assert (info.num_train_examples, info.num_eval_examples) == (64, 32)


def test_a_resumed_run_shuffles_afresh_and_a_fresh_run_as_before():
  """docs/data.md: a resumed epoch draws a fresh shuffle, not a replay of the first run's first steps."""
  assert data.shuffle_seed(42, 1, 0) == 43  # a fresh run: --seed plus the pipeline, as always
  seeds = {data.shuffle_seed(42, pipeline, step) for pipeline in (0, 1) for step in (0, 250, 500)}
  assert len(seeds) == 6
  # Reproducible across processes (a rerun is one): a fixed function of its arguments, pinned
  # (sha256 of "42/0/250", not Python's hash(), which PYTHONHASHSEED varies per process).
  assert data.shuffle_seed(42, 0, 250) == 2003023373
  assert all(0 <= s < 2**31 for s in seeds)


def test_train_pipeline_order_depends_on_the_start_step(tfds_dir):
  config = _config(data_dir=tfds_dir, batch_size=64)
  source = data.load(config)
  first = lambda step: next(iter(data.train_dataset(source, config, start_step=step)))[1].numpy()
  assert np.array_equal(first(0), first(0))
  assert np.array_equal(first(250), first(250))
  assert not np.array_equal(first(0), first(250))
