"""bfloat16 against float32, as whole training processes, on each instruction set this CPU can emulate.

  python bench/precision.py --cifar10-images DIR --validation         # the evidence for auto
  python bench/precision.py --cifar10-images DIR --isa ALL,AVX512_CORE,AVX2 --rounds 3

For each instruction-set cap (ONEDNN_MAX_CPU_ISA, inherited by the child;
ALL: none), each round runs `python -m trainer.task` twice on the same data
with the same seed, `--mixed-precision off` (float32) and then `bfloat16`,
alternating so machine noise hits both, and reads from each run's
metrics.json its steady training rate (images/s, compilation excluded) and
its final accuracy, and from config.json what `--mixed-precision auto`
would pick there (a third, auto, process is not needed: the choice depends
on the CPU and the cap alone, trainer/training/precision.py). A cap where
the trainer refuses bfloat16 (an AVX-512 CPU capped below AVX-512, where
TensorFlow still sends bfloat16 convolutions to oneDNN, which has none there
but at AVX2_VNNI_2)
is reported as refused; on a CPU without AVX-512, bfloat16 runs in
TensorFlow's own kernels and is measured like any other.

Prints, per cap: the rate ratio bfloat16 / float32 and the accuracy
difference, as medians with min/max, next to auto's choice, with the CPU
model and its vector extensions. The data are those of bench/end_to_end.py
(real CIFAR-10 JPEGs when given, else photo crops or --data synthetic); --project-args adds
trainer flags to both runs (the default preset otherwise).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (sets up sys.path and TF logging)
import end_to_end  # noqa: E402  (the data, one definition)


def train(data_args: list[str], extra: list[str], precision: str, seed: int,
          isa: str) -> dict:
  """One `python -m trainer.task` run; its rate, accuracy, wall time and auto's choice."""
  job_dir = tempfile.mkdtemp(prefix="bench-precision-")
  env = dict(os.environ)
  env.pop("ONEDNN_MAX_CPU_ISA", None)
  if isa != "ALL":
    env["ONEDNN_MAX_CPU_ISA"] = isa
  try:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "trainer.task", *data_args, "--job-dir", job_dir,
                           "--seed", str(seed), "--mixed-precision", precision, *extra],
                          cwd=common.REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode == 2 and "cannot run on this CPU" in done.stderr:
      return {"refused": done.stderr.strip().splitlines()[-1]}
    if done.returncode:
      raise RuntimeError(f"trainer.task exited {done.returncode}:\n{done.stderr[-3000:]}")
    with open(os.path.join(job_dir, "metrics.json")) as f:
      metrics = json.load(f)
    with open(os.path.join(job_dir, "config.json")) as f:
      resolved = json.load(f)["resolved"]
  finally:
    shutil.rmtree(job_dir, ignore_errors=True)
  return {"rate": metrics["train_images_per_sec"], "accuracy": metrics["test_accuracy"],
          "wall_s": wall, "precision": resolved["compute_precision"]}


def auto_choice(isa: str) -> str:
  """What --mixed-precision auto picks on this CPU under `isa`, as the trainer decides it."""
  from trainer.training import precision  # pylint: disable=import-outside-toplevel
  choice = precision.choose("auto", 0, precision.cpu_flags(), None if isa == "ALL" else isa)
  return f"{choice.name} ({choice.reason})"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--isa", default="ALL,AVX512_CORE,AVX2",
                      help="comma-separated ONEDNN_MAX_CPU_ISA caps; ALL: none (default: "
                           "ALL,AVX512_CORE,AVX2).")
  parser.add_argument("--rounds", type=int, default=1, help="pairs per cap (default: 1).")
  parser.add_argument("--input", choices=("folder", "tfds"), default="folder",
                      help="the input path (default: folder).")
  end_to_end.add_data_arguments(parser)
  parser.add_argument("--project-args", default="", help="extra trainer.task flags for both runs.")
  args = parser.parse_args()
  inputs, what = end_to_end.data_inputs(parser, args)
  extra = args.project_args.split()
  print(f"machine: {common.machine()}")
  print(f"cpu: {common.cpu()}")
  print(f"data: {what}, {args.input} input path; trainer.task defaults {' '.join(extra)}")
  for isa in args.isa.split(","):
    rates, gains, lines = [], [], []
    for r in range(args.rounds):
      f32 = train(inputs[args.input], extra, "off", seed=42 + r, isa=isa)
      b16 = train(inputs[args.input], extra, "bfloat16", seed=42 + r, isa=isa)
      if "refused" in b16:
        lines.append(f"  round {r + 1}: float32 {f32['rate']:.0f} images/s, accuracy "
                     f"{f32['accuracy']:.4f}; bfloat16 refused: {b16['refused']}")
        continue
      rates.append(b16["rate"] / f32["rate"])
      gains.append(b16["accuracy"] - f32["accuracy"])
      lines.append(f"  round {r + 1}: float32 {f32['rate']:.0f} images/s, {f32['wall_s']:.0f} s, "
                   f"accuracy {f32['accuracy']:.4f}; bfloat16 {b16['rate']:.0f} images/s, "
                   f"{b16['wall_s']:.0f} s, accuracy {b16['accuracy']:.4f}")
    print(f"{isa}: auto picks {auto_choice(isa)}")
    print("\n".join(lines))
    if rates:
      print(f"{isa}: training rate bfloat16 / float32 {common.spread(rates)}")
      print(f"{isa}: accuracy bfloat16 - float32 {common.spread(gains)}")
    sys.stdout.flush()


if __name__ == "__main__":
  main()
