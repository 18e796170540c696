"""A real TensorBoard process over a log directory, for tests that read it over HTTP."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from typing import Callable, Iterator

import pytest
import requests

STARTUP_S = 90


@contextlib.contextmanager
def serve(logdir: str, ready: Callable[[str], bool]) -> Iterator[str]:
  """Runs `tensorboard --logdir LOGDIR` on 127.0.0.1; yields its URL once `ready(url)` holds.

  Args:
    logdir: the directory TensorBoard reads.
    ready: called with the URL until it returns True (TensorBoard loads runs
      in the background, every second here), e.g. until a run is listed.
  """
  exe = shutil.which("tensorboard") or os.path.join(os.path.dirname(sys.executable), "tensorboard")
  # --port 0: TensorBoard binds a port the kernel picks and names it on stderr
  # ("TensorBoard 2.21.0 at http://127.0.0.1:PORT/"), just before it serves, so
  # no port is chosen in advance for another process to take first.
  proc = subprocess.Popen([exe, "--logdir", logdir, "--host", "127.0.0.1", "--port", "0",
                           "--reload_interval", "1"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  stderr, urls = [], queue.Queue()

  def read_stderr():  # also drains the pipe, so TensorBoard never blocks writing to it
    for line in proc.stderr:
      stderr.append(line)
      match = re.match(r"TensorBoard \S+ at (http://127\.0\.0\.1:\d+)/", line)
      if match:
        urls.put(match.group(1))

  reader = threading.Thread(target=read_stderr, daemon=True)
  reader.start()
  deadline = time.time() + STARTUP_S
  try:
    while True:
      try:
        url = urls.get(timeout=0.5)
        break
      except queue.Empty:
        assert proc.poll() is None, "".join(stderr)
        if time.time() > deadline:
          pytest.fail(f"TensorBoard did not report its URL within {STARTUP_S} s: {''.join(stderr)}")
    while time.time() < deadline:
      assert proc.poll() is None, "".join(stderr)
      try:
        if ready(url):
          break
      except requests.ConnectionError:
        pass
      time.sleep(0.5)
    else:
      pytest.fail(f"TensorBoard was not ready within {STARTUP_S} s: {''.join(stderr[-20:])}")
    yield url
  finally:
    proc.terminate()
    proc.wait(timeout=30)
    reader.join(timeout=10)
