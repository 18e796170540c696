"""Faults at exact points of a real trainer process, injected as sitecustomize.

A test that waits for a log line and then signals the process races it: on a
loaded machine the process may be several calls further, or past the epoch's
checkpoint, before the signal lands, so such tests needed long epochs (large
data) for a margin. Here the process acts *itself*, right after it has
written the line (logging.Logger.handle, wrapped by a sitecustomize that
Python runs at start-up): it sends itself a real SIGKILL or SIGTERM, or it
stops until the test releases it, at a known step, with data of any size.
"""

from __future__ import annotations

import os

# Runs first in the trainer's Python (on PYTHONPATH as sitecustomize). It
# imports nothing of trainer/; `who` picks the process: every one, or the
# worker whose JOB_COMPLETION_INDEX (a Kubernetes pod) or TF_CONFIG task index
# (a loopback cluster) it is. The marker file makes it act once, so the
# rerun (the same command, the same environment) runs undisturbed.
_ON_LOG = """
import json, logging, os, sys, time

def _index():
  if "JOB_COMPLETION_INDEX" in os.environ:
    return int(os.environ["JOB_COMPLETION_INDEX"])
  task = json.loads(os.environ.get("TF_CONFIG") or "{{}}").get("task", {{}})
  return int(task.get("index", 0))

_handle = logging.Logger.handle

def _handle_then_act(self, record):
  _handle(self, record)
  if ({text!r} in record.getMessage() and ({who!r} is None or _index() == {who!r})
      and not os.path.exists({marker!r})):
    open({marker!r}, "w").close()
    for stream in (sys.stdout, sys.stderr):
      stream.flush()
    if {sig!r} is not None:
      os.kill(os.getpid(), {sig!r})
    deadline = time.time() + 600
    while {sig!r} is None and not os.path.exists({release!r}) and time.time() < deadline:
      time.sleep(0.05)

logging.Logger.handle = _handle_then_act
"""


def signal_on_log(directory: str, text: str, sig: int, who: int | None = None) -> dict[str, str]:
  """Environment for trainer processes, one of which signals itself once, after logging `text`.

  Args:
    directory: an empty folder of the test's for the sitecustomize and its marker.
    text: a substring of the log message (e.g. "epoch 2/2 step 4/31").
    sig: the signal it sends itself (signal.SIGKILL, signal.SIGTERM).
    who: the worker index that does it; None: any process that logs the line.

  Returns:
    {"PYTHONPATH": ...}: add it to the processes' environment. `fired(directory)`
    tells afterwards whether the signal was sent.
  """
  return _write(directory, text, int(sig), who)


def pause_on_log(directory: str, text: str, who: int | None = None) -> dict[str, str]:
  """Like `signal_on_log`, but the process stops (for up to 600 s) until `release(directory)`.

  It stops inside the logging call, i.e. between two training calls; its
  peers wait for it in their next collective, as for a slow worker.
  """
  return _write(directory, text, None, who)


def fired(directory: str) -> bool:
  """Whether the process set up in `directory` has acted (signalled itself, or stopped)."""
  return os.path.exists(os.path.join(directory, "fired"))


def release(directory: str) -> None:
  """Lets a process stopped by `pause_on_log(directory, ...)` go on."""
  open(os.path.join(directory, "released"), "w", encoding="utf-8").close()


def _write(directory: str, text: str, sig: int | None, who: int | None) -> dict[str, str]:
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "sitecustomize.py"), "w", encoding="utf-8") as f:
    f.write(_ON_LOG.format(text=text, who=who, sig=sig, marker=os.path.join(directory, "fired"),
                           release=os.path.join(directory, "released")))
  return {"PYTHONPATH": os.pathsep.join(p for p in (directory, os.environ.get("PYTHONPATH")) if p)}
