"""Real worker processes for multi-worker tests: start, watch logs, signal, collect.

Each worker is `python -m trainer.task ...` (or the command a manifest names)
in its own process, talking gRPC to the others on 127.0.0.1 or inside a
network namespace. Nothing is mocked: these are the processes a cluster runs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Optional, Sequence

from conftest import REPO
from ports import free_port


class Worker:
  """One worker process whose stderr is collected line by line as it runs."""

  def __init__(self, name: str, argv: Sequence[str], env: dict[str, str]):
    self.name = name
    self.argv = list(argv)
    self.proc = subprocess.Popen(self.argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True, start_new_session=True)
    self.lines: list[str] = []
    self.exited_at: Optional[float] = None
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for line in self.proc.stderr:
      self.lines.append(line)
    self.proc.wait()
    self.exited_at = time.time()

  @property
  def log(self) -> str:
    return "".join(self.lines)

  def wait_for(self, text: str, timeout: float = 120) -> float:
    """Blocks until `text` appears in the log; returns the time it appeared."""
    deadline = time.time() + timeout
    while time.time() < deadline:
      if any(text in line for line in list(self.lines)):
        return time.time()
      if self.exited_at is not None and not any(text in line for line in list(self.lines)):
        raise AssertionError(f"{self.name} exited ({self.proc.returncode}) before logging "
                             f"{text!r}:\n{self.log[-4000:]}")
      time.sleep(0.05)
    raise AssertionError(f"{self.name} did not log {text!r} within {timeout} s:\n{self.log[-4000:]}")

  def signal(self, sig: int) -> float:
    os.kill(self.proc.pid, sig)
    return time.time()

  def wait(self, timeout: float = 300) -> int:
    """The process's return code: -N if signal N killed it (the kubelet reports 128+N)."""
    self.proc.wait(timeout=timeout)
    self._reader.join(timeout=10)
    return self.proc.returncode

  def kill(self):
    if self.proc.poll() is None:
      try:
        os.killpg(self.proc.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
      self.proc.wait(timeout=30)


def weights_fingerprint(log: str) -> str:
  """The sha256 of the final weights a worker logs: equal on every replica that stayed in sync."""
  return re.search(r"Final weights fingerprint \(sha256\): (\w+)", log).group(1)


def lost_peer(log: str) -> Optional[str]:
  """Whom a worker's exit-129 message names: 'worker 1', or 'another worker' where
  TensorFlow's error named no task but the worker's own (trainer/cluster/distribution.py)."""
  found = re.search(r"lost contact with (.+?) \(", log)
  return found.group(1) if found else None


def tf_config(addresses: Sequence[str], index: int, chief: bool = False) -> str:
  """TF_CONFIG for process `index`; with `chief`, process 0 is the 'chief' task."""
  if chief:
    cluster = {"chief": list(addresses[:1]), "worker": list(addresses[1:])}
    task = {"type": "chief", "index": 0} if index == 0 else {"type": "worker", "index": index - 1}
  else:
    cluster, task = {"worker": list(addresses)}, {"type": "worker", "index": index}
  return json.dumps({"cluster": cluster, "task": task})


def start_cluster(num_workers: int, args_for, tmpdir: str, chief: bool = False,
                  extra_env: Optional[dict[str, str]] = None) -> list[Worker]:
  """Starts `num_workers` trainer processes wired by TF_CONFIG on 127.0.0.1.

  Args:
    args_for: process index -> trainer flags.
    tmpdir: each worker's TMPDIR is tmpdir/worker<i>, so tests can see what
      a worker leaves in its temporary directory.
    chief: make process 0 a 'chief' task (Vertex AI, TFJob with a Chief).
  """
  addresses = [f"127.0.0.1:{free_port()}" for _ in range(num_workers)]
  workers = []
  for i in range(num_workers):
    tmp = os.path.join(tmpdir, f"worker{i}")
    os.makedirs(tmp, exist_ok=True)
    env = {**os.environ, "TF_CONFIG": tf_config(addresses, i, chief), "TMPDIR": tmp,
           "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    workers.append(Worker(f"worker {i}", [sys.executable, "-m", "trainer.task", *args_for(i)], env))
  return workers


def stop_all(workers: Sequence[Worker]):
  for w in workers:
    w.kill()
