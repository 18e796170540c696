"""trainer.prepare: an image folder, converted once, trains through the TFDS catalog path."""

import hashlib
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import ACCURACY_BAR, REPO, run_cli
from trainer import presets
from trainer.data import folders
from trainer.data import pipeline as data
from trainer import prepare
from trainer.data import prepared as prepared_lib
from trainer.data import synthetic

CLASSES = ["daisy", "rose", "tulip", "violet"]


def _prepare_cli(args):
  return subprocess.run([sys.executable, "-m", "trainer.prepare", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  """A learnable folder `flowers`, prepared by the real command line into a data dir."""
  base = tmp_path_factory.mktemp("prepare")
  root = synthetic.write_image_folder(str(base / "flowers"), (32, 32, 3), CLASSES,
                                      num_train=800, num_test=200)
  data_dir = str(base / "tfds")
  result = _prepare_cli([f"folder:{root}", "--data-dir", data_dir, "--num-shards", "4"])
  assert result.returncode == 0, result.stderr
  return root, data_dir, result.stdout


def test_prepare_prints_the_command_that_trains_on_it(prepared):
  _, data_dir, stdout = prepared
  assert stdout.strip().splitlines()[-1].strip() == (
      f"python -m trainer.task --dataset flowers --data-dir {data_dir}")
  assert "800 train / 200 test images of 32x32x3, 4 files per split" in stdout


def test_a_prepared_folder_learns_through_the_catalog_path(prepared, tmp_path):
  _, data_dir, _ = prepared
  job_dir = str(tmp_path / "job")
  result = run_cli(["--dataset", "flowers", "--data-dir", data_dir, "--job-dir", job_dir,
                    "--epochs", "6", "--batch-size", "32", "--log-every-steps", "25"])
  assert result.returncode == 0, result.stderr[-3000:]
  assert "dataset flowers: 800 train / 200 eval images of 32x32x3, 4 classes" in result.stderr
  with open(os.path.join(job_dir, "metrics.json"), encoding="utf-8") as f:
    metrics = json.load(f)
  assert metrics["test_accuracy"] >= ACCURACY_BAR, metrics  # chance: 0.25
  assert os.path.isdir(os.path.join(job_dir, "export", "flowers", "1"))


def _digests(ds):
  return sorted(hashlib.sha1(image.numpy().tobytes()).hexdigest() + str(int(label))
                for image, label in ds)


def _file_digests(root, split):
  from PIL import Image
  digests = []
  for k, label in enumerate(sorted(os.listdir(os.path.join(root, split)))):
    for name in os.listdir(os.path.join(root, split, label)):
      with Image.open(os.path.join(root, split, label, name)) as image:
        digests.append(hashlib.sha1(np.asarray(image.convert("RGB")).tobytes()).hexdigest() + str(k))
  return sorted(digests)


def test_examples_and_labels_round_trip_exactly(prepared):
  root, data_dir, _ = prepared
  source = data.load(presets.preset("cifar10", dataset="flowers", data_dir=data_dir))
  assert source.info.class_names == tuple(CLASSES)
  assert (source.info.num_train_examples, source.info.num_eval_examples) == (800, 200)
  assert _digests(source.read(False, None, 0)) == _file_digests(root, "test")
  assert _digests(source.read(True, None, 0)) == _file_digests(root, "train")


def test_the_folder_and_its_prepared_dataset_give_the_same_resized_pixels(prepared):
  root, data_dir, _ = prepared
  folder = data.load(presets.preset("cifar10", dataset=f"folder:{root}", image_size=20))
  tfds_ = data.load(presets.preset("cifar10", dataset="flowers", data_dir=data_dir,
                                      image_size=20))
  assert folder.info.image_shape == tfds_.info.image_shape == (20, 20, 3)
  assert _digests(folder.read(False, None, 0)) == _digests(tfds_.read(False, None, 0))


def test_two_workers_read_disjoint_files_covering_every_example(prepared):
  _, data_dir, _ = prepared
  config = presets.preset("cifar10", dataset="flowers", data_dir=data_dir)
  source = data.load(config)
  assert source.num_files("train") == source.num_files("test") == 4
  assert "each of 2 workers reads its own shard (by file)" in data.describe(source, config, 2)
  for train in (True, False):
    whole = _digests(source.read(train, None, 0))
    parts = [_digests(source.read(train, tf.distribute.InputContext(2, worker, 2), 0))
             for worker in (0, 1)]
    assert parts[0] and parts[1] and not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == whole


def test_default_shards_allow_by_file_sharding_and_grow_with_the_data():
  assert prepared_lib.default_num_shards(150 * 2**20, 10000) == 32  # CIFAR-10 as PNGs
  assert prepared_lib.default_num_shards(140 * 2**30, 50000) == 1120  # ImageNet-sized: 128 MiB files
  assert prepared_lib.default_num_shards(2**20, 20) == 20  # TFDS needs an image per file


def test_missing_folder_exits_2(tmp_path):
  result = _prepare_cli([f"folder:{tmp_path}/nope", "--data-dir", str(tmp_path / "tfds")])
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == f"error: folder:{tmp_path}/nope: no such directory."


@pytest.mark.parametrize("source", ["cifar10", "folder:", "/data/flowers"])
def test_a_source_that_is_no_folder_path_exits_2_naming_the_form(tmp_path, capsys, source):
  assert prepare.main([source, "--data-dir", str(tmp_path)]) == 2
  assert capsys.readouterr().err.strip() == (
      f"error: {source!r}: trainer.prepare takes folder:PATH.")
  assert os.listdir(tmp_path) == []  # nothing written


def test_an_existing_dataset_is_never_overwritten(prepared, capsys):
  root, data_dir, _ = prepared
  before = sorted(os.listdir(os.path.join(data_dir, "flowers", prepared_lib.VERSION)))
  assert prepare.main([f"folder:{root}", "--data-dir", data_dir]) == 2
  err = capsys.readouterr().err.strip().splitlines()[-1]
  assert "already holds a prepared dataset 'flowers'" in err
  assert "pass --name" in err and "or delete" in err
  assert sorted(os.listdir(os.path.join(data_dir, "flowers", prepared_lib.VERSION))) == before


@pytest.mark.parametrize("args, message", [
    (["--name", "cifar10"], r"'cifar10' is a TFDS catalog dataset.*pass --name"),
    (["--name", "My-Flowers"], r"not a dataset name TFDS can read back.*--name my_flowers"),
    (["--num-shards", "500"], r"--num-shards 500 is invalid: it must be between 1 and 200"),
])
def test_unusable_names_and_shard_counts_are_refused(prepared, tmp_path, capsys, args, message):
  root, _, _ = prepared
  assert prepare.main([f"folder:{root}", "--data-dir", str(tmp_path), *args]) == 2
  assert re.search(message, capsys.readouterr().err), message
  assert os.listdir(tmp_path) == []  # nothing written


def test_a_data_dir_that_cannot_be_written_is_named_before_any_image_is_decoded(prepared, tmp_path,
                                                                                capsys, monkeypatch):
  """It failed when TFDS wrote into it, after the whole decoding pass, with a traceback."""
  root, _, _ = prepared
  blocker = tmp_path / "a-file"
  blocker.write_text("")
  decoded = []
  monkeypatch.setattr(folders, "check_files", lambda *args: decoded.append(args) or 0)
  assert prepare.main([f"folder:{root}", "--data-dir", str(blocker / "tfds")]) == 2
  assert re.search(r"--data-dir .*a-file/tfds.* cannot be written", capsys.readouterr().err)
  assert decoded == []  # refused before the decoding pass


def test_a_suggested_name_is_one_the_catalog_does_not_refuse(tmp_path, capsys):
  """CIFAR10 was told to pass --name cifar10, which the catalog check then refused."""
  root = synthetic.write_image_folder(str(tmp_path / "CIFAR10"), num_train=20, num_test=10)
  assert prepare.main([f"folder:{root}", "--data-dir", str(tmp_path / "tfds")]) == 2
  assert "--name cifar10_images." in capsys.readouterr().err
  assert prepare.main([f"folder:{root}", "--data-dir", str(tmp_path / "tfds"),
                       "--name", "cifar10_images"]) == 0


def test_a_corrupt_image_is_named_before_anything_is_written(tmp_path, capsys):
  root = synthetic.write_image_folder(str(tmp_path / "broken"), num_train=20, num_test=10)
  label_dir = os.path.join(root, "train", "class_3")
  bad = os.path.join(label_dir, sorted(os.listdir(label_dir))[0])
  with open(bad, "rb") as f:
    whole = f.read()
  with open(bad, "wb") as f:
    f.write(whole[:len(whole) // 2])  # the header intact, the pixels cut off
  data_dir = tmp_path / "tfds"
  assert prepare.main([f"folder:{root}", "--data-dir", str(data_dir)]) == 2
  assert f"corrupt or unreadable image {bad}" in capsys.readouterr().err
  assert not (data_dir / "broken").exists()
