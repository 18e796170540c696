"""End to end through files on disk: the tutorial and `python -m trainer.task` as whole processes.

  python bench/end_to_end.py            # ~35 minutes per round on 2 CPU cores
  python bench/end_to_end.py --quick    # ~6 minutes: 10,000 / 2,000 images, 1 round
  python bench/end_to_end.py --inputs folder --project-args=--epochs=10

The question: from process start, how long until a test accuracy at least
the tutorial's own 10-epoch figure, and how does that compare with the
tutorial's wall time? Measured through the two real input paths:

* the catalog path: a prepared TFDS `cifar10` in a data_dir
  (`--dataset cifar10 --data-dir DIR`, what `tfds build cifar10` leaves);
* an image folder of PNGs (`--dataset folder:PATH`).

Both hold CIFAR-10-sized learnable data written by trainer.synthetic (50,000
train / 10,000 test images of 32x32x3, 10 classes), at a cue strength
(--signal) where the tutorial's test accuracy is still rising at epoch 10,
as on real CIFAR-10: synthetic data that both learn to 100% would make
"fewer epochs" look free. The data are written once into --work and reused.

Each round runs, for each input path, the tutorial (bench/tutorial.py: the
split loaded into NumPy through TFDS, `fit` at batch 32 for 10 epochs with
`validation_data`) and then the project (`python -m trainer.task` with its
defaults and a fresh --job-dir), alternating. Both are timed as whole
processes, from spawn to exit; the project's time includes its checkpoints,
TensorBoard logs and SavedModel export. Also printed: when the project's
per-epoch evaluation first reached the tutorial's final accuracy (time to
accuracy), read from its log as the lines arrive.

Every result is printed with the CPU model and its vector extensions:
TensorFlow's kernels run at different relative speeds on AVX2 and AVX-512.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (sets up sys.path and TF logging)

BENCH = os.path.dirname(os.path.abspath(__file__))
_EPOCH_LINE = re.compile(r"Epoch (\d+)/(\d+) done: eval loss [\d.]+, accuracy ([\d.]+)")


def write_data(work: str, num_train: int, num_test: int, signal: float,
               tint: float) -> dict[str, list[str]]:
  """Writes (once) both on-disk forms; returns each input's --dataset/--data-dir args."""
  from trainer import synthetic  # pylint: disable=import-outside-toplevel
  tag = f"{num_train}-{num_test}-signal{signal}-tint{tint}"
  tfds_dir, folder = os.path.join(work, f"tfds-{tag}"), os.path.join(work, f"folder-{tag}")
  done = os.path.join(work, f"{tag}.done")
  if not os.path.exists(done):
    for path in (tfds_dir, folder):
      shutil.rmtree(path, ignore_errors=True)
    start = time.perf_counter()
    cues = {"signal": signal, "tint": tint}
    synthetic.write_tfds("cifar10", tfds_dir, num_train, num_test, **cues)
    synthetic.write_image_folder(folder, (32, 32, 3), list(synthetic.CLASS_NAMES["cifar10"]),
                                 num_train, num_test, **cues)
    open(done, "w").close()
    print(f"wrote both forms in {time.perf_counter() - start:.0f} s to {work}")
  return {"tfds": ["--dataset", "cifar10", "--data-dir", tfds_dir],
          "folder": ["--dataset", f"folder:{folder}"]}


def run_tutorial(data_args: list[str], epochs: int) -> dict:
  start = time.perf_counter()
  out = subprocess.run([sys.executable, os.path.join(BENCH, "tutorial.py"), *data_args,
                        "--epochs", str(epochs)], check=True, capture_output=True, text=True)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  result["wall_s"] = time.perf_counter() - start
  return result


def run_project(data_args: list[str], extra: list[str]) -> dict:
  """python -m trainer.task as a whole process; per-epoch accuracies timed as logged."""
  job_dir = tempfile.mkdtemp(prefix="bench-e2e-")
  try:
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "trainer.task", *data_args, "--job-dir", job_dir,
                             *extra], cwd=common.REPO, stdout=subprocess.DEVNULL,
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
  finally:
    shutil.rmtree(job_dir, ignore_errors=True)
  return {"wall_s": wall, "epochs": epochs, "accuracy": metrics["test_accuracy"]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rounds", type=int, default=1, help="rounds per input path (default: 1).")
  parser.add_argument("--examples", type=int, default=50000, help="training images (default: 50000).")
  parser.add_argument("--test-examples", type=int, default=10000, help="test images (default: 10000).")
  parser.add_argument("--signal", type=float, default=0.04,
                      help="strength of the synthetic images' class square; lower is harder (default: 0.04).")
  parser.add_argument("--tint", type=float, default=0.02,
                      help="strength of their whole-image class tint (default: 0.02).")
  parser.add_argument("--epochs", type=int, default=10, help="the tutorial's epochs (default: 10).")
  parser.add_argument("--inputs", default="tfds,folder", help="input paths to run (default: tfds,folder).")
  parser.add_argument("--project-args", default="", help="extra trainer.task flags, space-separated.")
  parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "cnn-trainer-bench"),
                      help="where the data are written once and reused.")
  parser.add_argument("--quick", action="store_true", help="10,000 / 2,000 images, 1 round.")
  args = parser.parse_args()
  if args.quick:
    args.rounds, args.examples, args.test_examples = 1, 10000, 2000
  os.makedirs(args.work, exist_ok=True)

  print(f"machine: {common.machine()}")
  print(f"cpu: {common.cpu()}")
  inputs = write_data(args.work, args.examples, args.test_examples, args.signal, args.tint)
  extra = args.project_args.split()
  print(f"data: {args.examples} / {args.test_examples} learnable CIFAR-10-sized images, cues "
        f"--signal {args.signal} --tint {args.tint}; tutorial: {args.epochs} epochs at batch 32; project: "
        f"trainer.task defaults {' '.join(extra)}")
  for name in args.inputs.split(","):
    ratios, to_accuracy = [], []
    for r in range(args.rounds):
      t = run_tutorial(inputs[name], args.epochs)
      p = run_project(inputs[name], extra)
      bar = t["accuracy"][-1]
      reached = next((s for s, accuracy in p["epochs"] if accuracy >= bar), None)
      ratios.append(p["wall_s"] / t["wall_s"])
      if reached is not None:
        to_accuracy.append(reached / t["wall_s"])
      print(f"{name} round {r + 1}: tutorial {t['wall_s']:.0f} s (load {t['load_s']:.0f} s), "
            f"accuracy {bar:.4f}; project {p['wall_s']:.0f} s, accuracy {p['accuracy']:.4f}; "
            f"time ratio project/tutorial {p['wall_s'] / t['wall_s']:.2f}; project reached "
            f"{bar:.4f} at " + ("never" if reached is None else
                                 f"{reached:.0f} s ({reached / t['wall_s']:.2f}x the tutorial's time)"))
      print(f"   accuracy per epoch: tutorial {' '.join(f'{a:.3f}' for a in t['accuracy'])}")
      print(f"                       project  {' '.join(f'{a:.3f}' for _, a in p['epochs'])}")
      sys.stdout.flush()
    print(f"{name}: whole-process time ratio project/tutorial {common.spread(ratios)}   (target <= 0.5)")
    if to_accuracy:
      print(f"{name}: time to the tutorial's accuracy / tutorial's time {common.spread(to_accuracy)}")
    if len(to_accuracy) < len(ratios):
      print(f"{name}: the project missed the tutorial's accuracy in "
            f"{len(ratios) - len(to_accuracy)} of {len(ratios)} rounds")


if __name__ == "__main__":
  main()
