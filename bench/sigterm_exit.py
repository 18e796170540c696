"""From SIGTERM to exit: how long a preempted trainer holds its pod's grace period.

  python bench/sigterm_exit.py --data-dir DIR        # a TFDS data_dir with cifar10 in it
  python bench/sigterm_exit.py --data-dir DIR --rounds 3

Each round starts two whole processes in turn (A B A B ...), both training
CIFAR-10 from DIR through the real input path, and sends SIGTERM early in
epoch 1. A is `python -m trainer.task` (it exits with os._exit once its
writes are durable, trainer/task.py main_entry); B, the baseline, runs the
same main() and then returns through an ordinary interpreter shutdown, which
tears down TensorFlow's runtime and tf.data's threads. Reported per variant:
seconds from the signal to the log line of the stop (the checkpoint is saved
by then) and from the signal to the process's exit; and the per-round ratio
A/B of signal-to-exit. Without real CIFAR-10, write learnable stand-in data:
python -m trainer.synthetic --dataset cifar10 --data-dir DIR --num-train 50000 --num-test 10000.
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

BASELINE = ("import sys\nfrom trainer import task\nsys.exit(task.main(sys.argv[1:]))\n")


def one_run(command: list[str], data_dir: str) -> tuple[float, float, int]:
  job_dir = tempfile.mkdtemp(prefix="sigterm-bench-")
  proc = subprocess.Popen(
      [*command, "--dataset", "cifar10", "--data-dir", data_dir, "--job-dir", job_dir,
       "--epochs", "2", "--log-every-steps", "20"],
      cwd=common.REPO, stderr=subprocess.PIPE, text=True,
      env={**os.environ, "PYTHONUNBUFFERED": "1"})
  sent = stopped = None
  for line in proc.stderr:
    if sent is None and "epoch 1/2 step 100/" in line:
      sent = time.time()
      proc.send_signal(signal.SIGTERM)
    elif sent is not None and stopped is None and "stopped on SIGTERM" in line:
      stopped = time.time()
  proc.wait()
  exited = time.time()
  if sent is None or stopped is None:
    raise SystemExit(f"{command}: no SIGTERM stop seen (exit {proc.returncode})")
  return stopped - sent, exited - sent, proc.returncode


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data-dir", required=True, help="TFDS data_dir holding cifar10.")
  parser.add_argument("--rounds", type=int, default=3, help="A/B pairs (default: 3).")
  args = parser.parse_args()
  print(f"CPU: {common.cpu()}")
  variants = {"A os._exit (python -m trainer.task)": [sys.executable, "-m", "trainer.task"],
              "B interpreter shutdown (baseline)": [sys.executable, "-c", BASELINE]}
  results = {name: [] for name in variants}
  for _ in range(args.rounds):
    for name, command in variants.items():
      results[name].append(one_run(command, args.data_dir))
  for name, runs in results.items():
    assert all(code == 143 for _, _, code in runs), (name, runs)
    print(f"{name}: signal to stop {common.spread([r[0] for r in runs])} s; "
          f"signal to exit {common.spread([r[1] for r in runs])} s")
  a, b = results.values()
  print(f"ratio A/B of signal to exit: {common.spread([x[1] / y[1] for x, y in zip(a, b)])}")


if __name__ == "__main__":
  main()
