"""Time to first step: from `podman run` of the CPU image to its first training step.

  python bench/container_start.py --data-dir DIR [--rounds 3]     # as root, after .ci/build-image

A: the CPU image (docs/container.md), run with the manifests' settings as
tests/test_container.py runs it (read-only root, /tmp a tmpfs, uid 1000, no
capabilities), DIR mounted as its volume. B, the baseline: the same
`python -m trainer.task` outside any container, in this Python. Both train
the smoke preset on DIR's cifar10 with a log line per step, in turn (A B A B).
Reported per variant, in seconds from process start: the first log line, the
first training step, the first TensorBoard event file on disk, and the exit;
and the per-round ratio A/B of time to first step. Every start also builds
matplotlib's font cache (Keras imports matplotlib; /tmp is empty at each
start), about 0.3 s, which a read-only image cannot ship prebuilt.
"""

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

IMAGE = os.environ.get("CNN_TRAINER_IMAGE", "localhost/cnn-trainer:0.1.0-cpu")
FLAGS = ["--preset", "smoke", "--dataset", "cifar10", "--log-every-steps", "1"]


def one_run(command: list[str], job_dir: str) -> dict[str, float]:
  started = time.time()
  proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=common.REPO,
                          env={**os.environ, "PYTHONUNBUFFERED": "1",
                               "CONTAINERS_CONF": os.path.join(common.REPO, ".ci",
                                                               "containers.conf")})
  times: dict[str, float] = {}
  for line in proc.stderr:
    now = time.time() - started
    times.setdefault("first log line", now)
    if "step 1/" in line:
      times.setdefault("first step", now)
    if "event file" not in times and glob.glob(os.path.join(job_dir, "logs", "train", "events*")):
      times["event file"] = now
  proc.wait()
  times["exit"] = time.time() - started
  assert proc.returncode == 0, (command, proc.returncode)
  return times


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data-dir", required=True, help="TFDS data_dir holding cifar10.")
  parser.add_argument("--rounds", type=int, default=3, help="A/B pairs (default: 3).")
  args = parser.parse_args()
  print(f"CPU: {common.cpu()}; image {IMAGE}")
  results = {"A container": [], "B no container": []}
  for _ in range(args.rounds):
    volume = tempfile.mkdtemp(prefix="start-bench-")
    shutil.copytree(args.data_dir, os.path.join(volume, "tensorflow_datasets"))
    subprocess.run(["chown", "-R", "1000:1000", volume], check=True)
    container = ["podman", "run", "--rm", "--pull=never", "--read-only", "--read-only-tmpfs=false",
                 "--mount", "type=tmpfs,destination=/tmp,tmpfs-mode=1777", "--user", "1000:1000",
                 "--cap-drop=ALL", "--security-opt", "no-new-privileges",
                 "--volume", f"{volume}:/data", IMAGE, *FLAGS,
                 "--data-dir", "/data/tensorflow_datasets", "--job-dir", "/data/job-a"]
    results["A container"].append(one_run(container, os.path.join(volume, "job-a")))
    local = [sys.executable, "-m", "trainer.task", *FLAGS, "--data-dir",
             os.path.join(volume, "tensorflow_datasets"), "--job-dir", os.path.join(volume, "job-b")]
    results["B no container"].append(one_run(local, os.path.join(volume, "job-b")))
    shutil.rmtree(volume)
  for name, runs in results.items():
    print(name + ": " + "; ".join(f"{key} {common.spread([r[key] for r in runs])} s"
                                  for key in runs[0]))
  a, b = results.values()
  print("ratio A/B of time to first step: "
        + common.spread([x["first step"] / y["first step"] for x, y in zip(a, b)]))


if __name__ == "__main__":
  main()
