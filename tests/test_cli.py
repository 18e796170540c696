"""The command line: --help, and bad input -> one actionable line and exit code 2."""

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO, run_cli
from trainer import config as config_lib
from trainer import errors
from trainer import presets
from trainer import task
from trainer.data import pipeline as data_lib


def test_help_documents_every_flag_with_its_default(capsys):
  with pytest.raises(SystemExit) as exit_info:
    task.main(["--help"])
  assert exit_info.value.code == 0
  out = capsys.readouterr().out
  text = " ".join(out.split())  # undo argparse's line wrapping
  # Each option's own entry: from its line ("  --flag METAVAR", "  --augment, --no-augment") to
  # the next option's, so that a default is checked where it belongs, not anywhere in the text.
  entries, current = {}, None
  for line in out.splitlines():
    if line.startswith("  -"):
      current = line.split()[0].rstrip(",")
      entries[current] = ""
    if current:
      entries[current] += " " + " ".join(line.split())
  for field in config_lib.fields():
    flag = "--" + field.name.replace("_", "-")
    assert flag in entries, flag
    assert f"(default: {field.default}" in entries[flag], (flag, entries[flag])
  assert "--preset" in entries and "Exit codes" in text


def _bad_folder(tmp_path, kind):
  from PIL import Image
  for split in ("train", "test"):
    for label in ("a", "b"):
      os.makedirs(tmp_path / split / label)
  if kind == "empty":
    return f"folder:{tmp_path}"
  side = 16 if kind == "small" else 32
  for split, labels in (("train", "ab"), ("test", "a" if kind == "labels" else "ab")):
    for label in labels:
      Image.new("RGB", (side, side)).save(tmp_path / split / label / "0.png")
  if kind == "corrupt":
    (tmp_path / "train" / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
  return f"folder:{tmp_path}"


def _a_file(root):
  """Some file under `root`: a --job-dir inside it cannot be created, even by root."""
  return next(os.path.join(d, f) for d, _, files in os.walk(root) for f in sorted(files))


@pytest.mark.parametrize("case", [
    "unknown dataset", "empty folder", "mismatched labels", "corrupt image", "epochs 0",
    "batch -1", "unwritable job dir", "data dir without dataset", "malformed TF_CONFIG",
    "image size 17", "16-pixel images", "preset's warm-up", "preset's lr steps", "warm-up given",
    "momentum with adam", "step factor with cosine", "data dir with a folder", "all sliced",
    "out of memory"])
def test_bad_input_is_one_actionable_line_and_exit_2(case, tmp_path, tfds_dir, capsys, monkeypatch):
  job_dir = str(tmp_path / "job")
  args = ["--data-dir", tfds_dir, "--job-dir", job_dir, "--epochs", "1"]
  expect = {
      "unknown dataset": (["--dataset", "cifar_10"], r"unknown dataset 'cifar_10' \(did you mean cifar10"),
      "empty folder": (lambda: ["--dataset", _bad_folder(tmp_path / "d", "empty")],
                       r"has no \.png or \.jpg images"),
      "mismatched labels": (lambda: ["--dataset", _bad_folder(tmp_path / "d", "labels")],
                            r"different label sets \(only in train: \['b'\]"),
      "corrupt image": (lambda: ["--dataset", _bad_folder(tmp_path / "d", "corrupt")],
                        r"corrupt or unreadable image .*train/b/broken\.jpg.*Remove or replace"),
      "epochs 0": (["--epochs", "0"], r"--epochs 0 is invalid: it must be an integer >= 1"),
      "batch -1": (["--batch-size", "-1"], r"--batch-size -1 is invalid: it must be an integer >= 1"),
      "unwritable job dir": (["--job-dir", os.path.join(_a_file(tfds_dir), "job")],
                             r"--job-dir .* cannot be written .*choose a writable directory"),
      "data dir without dataset": (["--data-dir", str(tmp_path)],
                                   rf"does not hold dataset 'cifar10'.*tfds build cifar10 --data_dir {tmp_path}.*leave --data-dir out"),
      "malformed TF_CONFIG": ([], r"malformed TF_CONFIG \(TF_CONFIG\): not JSON"),
      # The tutorial CNN needs 18 pixels a side (config.MIN_IMAGE_SIZE); 16 and 17
      # were taken and failed in Keras with a traceback and exit 1.
      "image size 17": (["--image-size", "17"],
                        r"--image-size 17 is invalid: it must be >= 18 pixels for --model tutorial"),
      "16-pixel images": (lambda: ["--dataset", _bad_folder(tmp_path / "d", "small")],
                          r"has 16x16 images, smaller than the 18 pixels a side --model tutorial "
                          r"takes: pass --image-size 32"),
      # A preset's value that a shorter --epochs no longer fits: the message named
      # only the flag the user never typed.
      "preset's warm-up": (["--preset", "cifar10-best"],
                           r"--warmup-epochs 2\.0 is invalid: it must be shorter than --epochs "
                           r"\(1\)\. That value of --warmup-epochs is --preset cifar10-best's: "
                           r"pass --warmup-epochs as well, or another --preset\.$"),
      "preset's lr steps": (["--preset", "cifar10-resnet20"],
                            r"--lr-step-epochs \[82\.0, 123\.0\] is invalid: .* That value of "
                            r"--lr-step-epochs is --preset cifar10-resnet20's: pass --lr-step-epochs"),
      "warm-up given": (["--preset", "cifar10-best", "--warmup-epochs", "3"],
                        r"--warmup-epochs 3\.0 is invalid: it must be shorter than --epochs \(1\)\.$"),
      # Flags another flag's choice ignores: they did nothing, without a word.
      "momentum with adam": (["--momentum", "0.5"],
                             r"--momentum 0\.5 has no effect with --optimizer adam: it applies only "
                             r"to --optimizer sgd\. Drop --momentum, or pass --optimizer sgd\.$"),
      "step factor with cosine": (["--lr-step-factor", "0.5"],
                                  r"--lr-step-factor 0\.5 has no effect with --lr-schedule cosine"),
      # The folder was read and --data-dir ignored: a prepared copy there never used.
      "data dir with a folder": (lambda: ["--dataset", _bad_folder(tmp_path / "d", "good"),
                                          "--data-dir", tfds_dir],
                                 r"--data-dir '.*' is invalid: it must be left out with --dataset "
                                 r"folder:.*, which is read from its PATH"),
      # TFDS's grammar raises NotImplementedError for a slice of `all`: a traceback.
      "all sliced": (["--train-split", "all[:90%]"],
                     r"--train-split 'all\[:90%\]' is not a split of 'cifar10'"),
      # The dense layer of a 100,000-pixel side: a ResourceExhaustedError's traceback, exit 1.
      "out of memory": (["--image-size", "100000"],
                        r"out of memory \(.*OOM when allocating tensor.*\)\. Lower --batch-size \(the "
                        r"global batch, 64 images per step\) or --image-size \(100000\)"),
  }[case]
  if case == "malformed TF_CONFIG":
    monkeypatch.setenv("TF_CONFIG", "{cluster: nope")
  flags = expect[0]() if callable(expect[0]) else expect[0]
  if case != "data dir with a folder" and "--dataset" in flags and (
      flags[flags.index("--dataset") + 1].startswith("folder:")):
    args = args[2:]  # a folder is read from its PATH, not --data-dir (that case refuses it)
  code = task.main(args + flags)
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2
  assert err[-1].startswith("error: ")
  assert re.search(expect[1], err[-1]), err[-1]
  assert not os.path.exists(os.path.join(job_dir, "checkpoints"))  # failed before any work


def test_a_flag_another_flag_reads_is_taken_with_that_choice():
  """The refusals above are of the combination only: with the choice that reads it, each flag works."""
  assert task.parse_config(["--optimizer", "sgd", "--momentum", "0.5"]).momentum == 0.5
  assert task.parse_config(["--preset", "cifar10-resnet20", "--momentum", "0.8"]).momentum == 0.8
  assert task.parse_config(["--lr-schedule", "step", "--lr-step-epochs", "3", "--lr-step-factor",
                            "0.5"]).lr_step_factor == 0.5
  assert task.parse_config(["--cache-limit-mb", "10"]).cache_limit_mb == 10  # --cache auto
  assert task.parse_config(["--preset", "cifar10-best", "--epochs", "3"]).warmup_epochs == 2.0


def test_exit_codes_reach_the_shell(tfds_dir, tmp_path):
  # Before TensorFlow loads...
  result = run_cli(["--epochs", "0"])
  assert result.returncode == 2 and result.stderr.strip() == (
      "error: --epochs 0 is invalid: it must be an integer >= 1.")
  # ...and after (the data check needs TFDS).
  result = run_cli(["--dataset", "nope_not_a_dataset", "--job-dir", str(tmp_path)])
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith("error: unknown dataset 'nope_not_a_dataset'")
  # argparse's own usage errors are exit code 2 as well.
  assert run_cli(["--no-such-flag"]).returncode == 2


def test_a_local_folder_that_is_not_there_fails_before_tensorflow_loads(tmp_path):
  """The scan's own message, seconds sooner: TensorFlow is never imported."""
  missing = tmp_path / "no-such-folder"
  result = subprocess.run(
      [sys.executable, "-c", "import sys; from trainer import task; "
       f"code = task.main(['--dataset', 'folder:{missing}', '--job-dir', '{tmp_path / 'job'}']); "
       "print(code, 'tensorflow' in sys.modules)"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.stdout.split() == ["2", "False"], result.stdout + result.stderr
  assert result.stderr.strip() == f"error: --dataset folder:{missing}: no such directory."
  assert not os.path.exists(tmp_path / "job")
  # In a run's code path, the folder scan says the same.
  from trainer.data import folders  # pylint: disable=import-outside-toplevel
  with pytest.raises(errors.DataError) as raised:
    folders.scan(str(missing), f"--dataset folder:{missing}")
  assert result.stderr.strip() == f"error: {raised.value}"


# Points of start-up, each reached whatever the machine's speed (tests/faults.py): a
# time (the process may not have its handler yet); Keras's import inside TensorFlow's, and
# TFDS's after it (TensorFlow's lazy loader imports keras itself through importlib, which
# raises no audit event; keras.src is a plain import); the job-dir lock just taken (the
# handler that releases it). Times drift with the machine: 3.0 s after the start landed in
# the import on one and in the smoke run's only training call on another.
@pytest.mark.parametrize("point", ["0.3 s", "import keras.src", "import tensorflow_datasets",
                                   "log Holding the job-dir lock"])
def test_sigterm_at_any_point_of_start_up_exits_143(tfds_dir, tmp_path, point):
  """While Python starts, flags are parsed, TensorFlow imports and the job dir is locked, a
  SIGTERM (a pod deleted or drained at start) ends the process with the retriable code, never a
  traceback and exit 1, which a Job's podFailurePolicy would count as a crash. Killed before the
  handler exists, the process reports the signal itself, which a container runtime also reports
  as 143."""
  import signal  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  from faults import fired, signal_on_import, signal_on_log  # pylint: disable=import-outside-toplevel
  fault, env = str(tmp_path / "fault"), dict(os.environ)
  kind, _, what = point.partition(" ")
  if kind == "import":
    env.update(signal_on_import(fault, what, signal.SIGTERM))
  elif kind == "log":
    env.update(signal_on_log(fault, what, signal.SIGTERM))
  proc = subprocess.Popen(
      [sys.executable, "-m", "trainer.task", "--preset", "smoke", "--dataset", "cifar10",
       "--data-dir", tfds_dir, "--job-dir", str(tmp_path / "job")],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
  if point == "0.3 s":
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  if point == "0.3 s":
    assert proc.returncode in (143, -signal.SIGTERM), err[-3000:]
  else:  # past the handler's installation: the process says what it did
    assert fired(fault) and proc.returncode == 143, err[-3000:]
    assert not os.path.exists(tmp_path / "job" / "checkpoints"), "it trained"
  assert "Traceback" not in err, err[-3000:]


# ---------------------------------------------------------- trainer.synthetic


@pytest.mark.parametrize("case", ["unknown", "not images", "count 0", "already there", "unwritable",
                                  "many classes", "varying size"])
def test_synthetic_data_bad_input_is_one_line_and_exit_2_writing_nothing(case, tmp_path, tfds_dir,
                                                                         capsys):
  """README's offline command: each of these was a traceback and exit 1."""
  from trainer import synthetic as synthetic_cli  # pylint: disable=import-outside-toplevel
  fresh = str(tmp_path / "tfds")
  args, message = {
      "unknown": (["--dataset", "cifar_10", "--data-dir", fresh],
                  r"unknown dataset 'cifar_10' \(did you mean cifar10"),
      "not images": (["--dataset", "imdb_reviews", "--data-dir", fresh],
                     r"not an image-classification dataset"),
      "count 0": (["--data-dir", fresh, "--num-train", "0"], r"--num-train 0 is invalid"),
      "already there": (["--data-dir", tfds_dir],
                        rf"--data-dir '{tfds_dir}' already holds dataset 'cifar10' .*: train on it "
                        rf"\(python -m trainer.task --dataset cifar10 --data-dir {tfds_dir}\)"),
      "unwritable": (["--data-dir", os.path.join(_a_file(tfds_dir), "tfds")],
                     r"--data-dir .* cannot be written"),
      # The drawing has ten colours and one image size: IndexError and TypeError.
      "many classes": (["--dataset", "cifar100", "--data-dir", fresh],
                       r"'cifar100' has 100 classes; trainer.synthetic draws at most 10"),
      "varying size": (["--dataset", "tf_flowers", "--data-dir", fresh],
                       r"'tf_flowers' has images of varying size"),
  }[case]
  before = sorted(os.walk(tfds_dir))
  assert synthetic_cli.main(args) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ") and re.search(message, err[0]), err
  assert not os.path.exists(fresh) and sorted(os.walk(tfds_dir)) == before


def test_synthetic_data_are_written_where_the_trainer_reads_them(tmp_path, capsys):
  from trainer import synthetic as synthetic_cli  # pylint: disable=import-outside-toplevel
  data_dir = str(tmp_path / "tfds")
  assert synthetic_cli.main(["--dataset", "mnist", "--data-dir", data_dir, "--num-train", "40",
                             "--num-test", "20"]) == 0
  # Only the path: TFDS's "Downloading and preparing dataset" lines are not shown (nothing is).
  assert capsys.readouterr().out == os.path.join(data_dir, "mnist", "3.0.1") + "\n"
  info = data_lib.load(presets.preset("mnist", data_dir=data_dir)).info
  assert (info.num_train_examples, info.num_eval_examples, info.image_shape) == (40, 20, (28, 28, 1))
