"""Faults at exact points of a real trainer process, injected as sitecustomize.

A test that waits for a log line and then signals the process races it: on a
loaded machine the process may be several calls further, or past the epoch's
checkpoint, before the signal lands, so such tests needed long epochs (large
data) for a margin. Here the process signals *itself*, right after it has
written the line (logging.Logger.handle, wrapped by a sitecustomize that
Python runs at start-up): a real SIGKILL or SIGTERM, delivered at a known
step, with data of any size.
"""

from __future__ import annotations

import os

# Runs first in the trainer's Python (on PYTHONPATH as sitecustomize). It
# imports nothing of trainer/; `who` picks the process: every one, or the
# worker whose JOB_COMPLETION_INDEX (a Kubernetes pod) or TF_CONFIG task index
# (a loopback cluster) it is. The marker file makes it fire once, so the
# rerun (the same command, the same environment) runs undisturbed.
_SIGNAL_ON_LOG = """
import json, logging, os, sys

def _index():
  if "JOB_COMPLETION_INDEX" in os.environ:
    return int(os.environ["JOB_COMPLETION_INDEX"])
  task = json.loads(os.environ.get("TF_CONFIG") or "{{}}").get("task", {{}})
  return int(task.get("index", 0))

_handle = logging.Logger.handle

def _handle_then_signal(self, record):
  _handle(self, record)
  if ({text!r} in record.getMessage() and ({who!r} is None or _index() == {who!r})
      and not os.path.exists({marker!r})):
    open({marker!r}, "w").close()
    for stream in (sys.stdout, sys.stderr):
      stream.flush()
    os.kill(os.getpid(), {sig!r})

logging.Logger.handle = _handle_then_signal
"""


def signal_on_log(directory: str, text: str, sig: int, who: int | None = None) -> dict[str, str]:
  """Environment for trainer processes, one of which signals itself once, after logging `text`.

  Args:
    directory: an empty folder of the test's for the sitecustomize and its marker.
    text: a substring of the log message (e.g. "epoch 2/2 step 5/31").
    sig: the signal it sends itself (signal.SIGKILL, signal.SIGTERM).
    who: the worker index that does it; None: any process that logs the line.

  Returns:
    {"PYTHONPATH": ...}: add it to the processes' environment. `fired(directory)`
    tells afterwards whether the signal was sent.
  """
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "sitecustomize.py"), "w", encoding="utf-8") as f:
    f.write(_SIGNAL_ON_LOG.format(text=text, who=who, sig=int(sig), marker=_marker(directory)))
  return {"PYTHONPATH": os.pathsep.join(p for p in (directory, os.environ.get("PYTHONPATH")) if p)}


def fired(directory: str) -> bool:
  """Whether the process set up by `signal_on_log(directory, ...)` has signalled itself."""
  return os.path.exists(_marker(directory))


def _marker(directory: str) -> str:
  return os.path.join(directory, "fired")

