"""Rollout decisions on real data: `serving.rollout promote` through REST and gRPC, timed.

  python bench/rollout_decisions.py --models DIR/cifar10 --data folder:PATH \
      [--versions 1,2,3] [--protocols rest,grpc]

DIR/cifar10 holds published versions of one model (for instance trained on
real CIFAR-10 with `python -m trainer.task --dataset folder:PATH --model-name
cifar10 --publish-dir DIR`). --versions names the baseline first, then the
candidates (e.g. 1 = 3 epochs, 2 = 1 epoch, expected worse, 3 = 7 epochs,
expected better); they are served as versions 1, 2, 3... For each protocol
this starts k8s/serving.yaml's TF Serving pod (the stand-in in
tests/standins/tfserving, from the manifest's own arguments; only its polls
shortened to 1 s), with the baseline as `stable`, then runs `promote
--candidate N` for each candidate in turn, as whole `python -m
serving.rollout` processes, and prints
each decision with its figures and p-value from the record it wrote, and the
wall time of each command (process start to exit: listing, loading, the label
moves, and the held-out split through both labels).

The stand-in runs the SavedModels in Python threads of this process, so the
times are not TF Serving's own: compare REST with gRPC, not with a cluster.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))  # the stand-in and the pod harness
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402  (bench/common.py: the CPU's model and vector extensions)
from k8s_harness import ServingDeployment  # noqa: E402

BASE = "gs://BUCKET/models/cifar10"  # models.config's base path in k8s/serving.yaml
FAST = {"--model_config_file_poll_wait_seconds": "1", "--file_system_poll_wait_seconds": "1"}


def run_protocol(protocol: str, models: str, data: str, tmp: str, versions: list[int]) -> list[dict]:
  pod = ServingDeployment(os.path.join(REPO, "k8s", "serving.yaml"), tmp)
  pod.set_flags(FAST)
  base = pod.local(BASE)
  for served, version in enumerate(versions, start=1):
    shutil.copytree(os.path.join(models, str(version)), os.path.join(base, str(served)))
  server = pod.start()
  try:
    if not server.started.wait(120):
      raise SystemExit(f"the stand-in did not start: {server.failed}")
    target = server.grpc_target if protocol == "grpc" else server.rest_url
    records = os.path.join(tmp, "records")
    results = []
    for candidate in range(2, len(versions) + 1):
      command = [sys.executable, "-m", "serving.rollout", "promote", "--model", "cifar10",
                 "--config", pod.local("/etc/tf-serving/models.config"), "--server", target,
                 "--protocol", protocol, "--base-path", base, "--records", records,
                 "--poll-s", "0.2", "--candidate", str(candidate), "--data", data]
      began = time.monotonic()
      done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
      wall_s = time.monotonic() - began
      newest = max(glob.glob(os.path.join(records, "*.json")), key=os.path.getmtime)
      with open(newest, encoding="utf-8") as f:
        record = json.load(f)
      results.append({"protocol": protocol, "candidate": candidate,
                      "published_as": {"baseline": versions[0], "candidate": versions[candidate - 1]},
                      "exit": done.returncode,
                      "wall_s": round(wall_s, 1), "record": record,
                      "last_line": (done.stderr.strip().splitlines() or [""])[-1]})
    return results
  finally:
    pod.stop()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", required=True, help="a model's base path holding versions 1, 2, 3")
  parser.add_argument("--data", required=True, help="the held-out data, as promote's --data")
  parser.add_argument("--versions", default="1,2,3",
                      help="published versions: the baseline, then each candidate")
  parser.add_argument("--protocols", default="rest,grpc")
  parser.add_argument("--out", help="also write the results as JSON here")
  args = parser.parse_args()
  print(f"CPU: {common.cpu()}; ONEDNN_MAX_CPU_ISA="
        f"{os.environ.get('ONEDNN_MAX_CPU_ISA', '(unset: all)')}")
  results = []
  for protocol in args.protocols.split(","):
    with tempfile.TemporaryDirectory() as tmp:
      results += run_protocol(protocol, args.models, args.data, tmp,
                              [int(v) for v in args.versions.split(",")])
  for r in results:
    rec = r["record"]
    print(f"{r['protocol']:4} candidate {r['candidate']}: exit {r['exit']} in {r['wall_s']} s "
          f"({rec.get('decision')}): {r['last_line']}")
    print("      " + json.dumps({k: rec.get(k) for k in ("figures", "test")}, sort_keys=True)[:1500])
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
