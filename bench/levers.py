"""Speed levers, one at a time: whole `python -m trainer.task` processes on files on disk.

  python bench/levers.py            # ~10 minutes on 2 CPU cores
  python bench/levers.py --rounds 1 --epochs 1

Each variant changes one thing against the defaults in float32
(--mixed-precision off, so that a variant that changes the instruction set
does not also change auto's precision): thread pools, oneDNN, the batch size
(with the default sqrt learning-rate rule), steps per compiled call,
bfloat16 compute. Every round runs the baseline and then each variant, so
machine noise hits all of them; the ratios are per round against that
round's baseline. Reported per variant: the training rate (images/s after
the first compiled call, from metrics.json) and the whole process's wall
time, each as a ratio to the baseline (> 1 is faster).

The data: bench/end_to_end.py's photo crops (or --data synthetic), 50,000
images prepared as TFDS `cifar10`, read through the catalog path.
"""

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (sets up sys.path and TF logging)
import end_to_end  # noqa: E402

# name -> (extra environment, extra trainer.task flags)
VARIANTS = {
    "1 intra-op thread": ({"TF_NUM_INTRAOP_THREADS": "1"}, []),
    "1 inter-op thread": ({"TF_NUM_INTEROP_THREADS": "1"}, []),
    "oneDNN off": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, []),
    "oneDNN capped at AVX2": ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, []),
    "batch 32": ({}, ["--batch-size", "32"]),
    "batch 128": ({}, ["--batch-size", "128"]),
    "batch 256": ({}, ["--batch-size", "256"]),
    "1 step per call": ({}, ["--steps-per-execution", "1"]),
    # Fast only where the CPU has bfloat16 instructions (avx512_bf16, amx_bf16).
    "mixed bfloat16": ({}, ["--mixed-precision", "bfloat16"]),
}


# The baseline's precision, in every run: --mixed-precision auto picks bfloat16 on
# CPUs with AVX512-BF16 and float32 once oneDNN is capped below AVX-512, so the
# ISA variants would change precision too. The bfloat16 variant's flag comes last.
BASELINE_FLAGS = ["--mixed-precision", "off"]


def run(data_args: list[str], env: dict, flags: list[str], epochs: int) -> tuple[float, float]:
  """(training images/s, wall seconds) of one whole trainer.task process."""
  result = end_to_end.run_project(data_args, ["--epochs", str(epochs), *BASELINE_FLAGS, *flags],
                                  seed=42, env=env)
  return result["metrics"]["train_images_per_sec"], result["wall_s"]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rounds", type=int, default=2, help="rounds (default: 2).")
  parser.add_argument("--epochs", type=int, default=2, help="epochs per run (default: 2).")
  parser.add_argument("--variants", default=",".join(VARIANTS),
                      help=f"comma-separated subset of: {', '.join(VARIANTS)}.")
  parser.add_argument("--data", choices=("photos", "synthetic"), default="photos")
  parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "cnn-trainer-bench"))
  args = parser.parse_args()
  os.makedirs(args.work, exist_ok=True)
  names = [name.strip() for name in args.variants.split(",")]
  unknown = sorted(set(names) - set(VARIANTS))
  if unknown:
    parser.error(f"unknown variants {unknown}")

  print(f"machine: {common.machine()}")
  print(f"cpu: {common.cpu()}")
  data_args = end_to_end.write_data(args.work, args.data, 50000, 10000, 0.4, 0.08)["tfds"]
  print(f"data: 50,000 / 10,000 images ({args.data}), prepared TFDS; {args.epochs} epochs per run")
  rates, walls = {name: [] for name in names}, {name: [] for name in names}
  for r in range(args.rounds):
    base_rate, base_wall = run(data_args, {}, [], args.epochs)
    print(f"round {r + 1}: defaults in float32 {base_rate:.0f} images/s, {base_wall:.1f} s")
    for name in names:
      env, flags = VARIANTS[name]
      rate, wall = run(data_args, env, flags, args.epochs)
      rates[name].append(rate / base_rate)
      walls[name].append(base_wall / wall)
      print(f"   {name:24s} {rate:6.0f} images/s ({rate / base_rate:.2f}x), {wall:.1f} s "
            f"({base_wall / wall:.2f}x)")
      sys.stdout.flush()
  print("speed against the defaults (> 1 is faster), median (min, max):")
  for name in names:
    print(f"  {name:24s} training rate {common.spread(rates[name])}; whole process "
          f"{common.spread(walls[name])}")


if __name__ == "__main__":
  main()
