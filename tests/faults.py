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

import json
import os

# Runs first in the trainer's Python (on PYTHONPATH as sitecustomize). It
# imports nothing of trainer/. Its rules (rules.jsonl beside it) each name a
# message substring, the process (`who`: every one, or the worker whose
# JOB_COMPLETION_INDEX, for a Kubernetes pod, or TF_CONFIG task index, for a
# loopback cluster, it is) and what it does: send itself `sig`, or with no
# `sig` stop until the release file exists. Each rule acts once (its marker
# file), so the rerun (the same command, the same environment) runs on. A
# signal `delay` s after the line comes from a timer thread, while the main
# thread has gone on into the next training call.
_SITECUSTOMIZE = """
import json, logging, os, sys, threading, time

_HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(_HERE, "rules.jsonl"), encoding="utf-8") as _f:
  _RULES = [json.loads(line) for line in _f]

def _index():
  if "JOB_COMPLETION_INDEX" in os.environ:
    return int(os.environ["JOB_COMPLETION_INDEX"])
  task = json.loads(os.environ.get("TF_CONFIG") or "{}").get("task", {})
  return int(task.get("index", 0))

_handle = logging.Logger.handle

def _handle_then_act(self, record):
  _handle(self, record)
  for rule in _RULES:
    if (rule["text"] in record.getMessage() and rule["who"] in (None, _index())
        and not os.path.exists(rule["marker"])):
      open(rule["marker"], "w").close()
      for stream in (sys.stdout, sys.stderr):
        stream.flush()
      if rule["sig"] is not None and rule["delay"]:
        threading.Timer(rule["delay"], os.kill, (os.getpid(), rule["sig"])).start()
      elif rule["sig"] is not None:
        os.kill(os.getpid(), rule["sig"])
      deadline = time.time() + 600
      while rule["sig"] is None and not os.path.exists(rule["release"]) and time.time() < deadline:
        time.sleep(0.05)

logging.Logger.handle = _handle_then_act
"""


def signal_on_log(directory: str, text: str, sig: int, who: int | None = None,
                  delay: float = 0.0) -> dict[str, str]:
  """Environment for trainer processes, one of which signals itself once, after logging `text`.

  Args:
    directory: a folder of the test's for the sitecustomize, its rules and markers;
      each call adds a rule there.
    text: a substring of the log message (e.g. "epoch 2/2 step 4/31").
    sig: the signal it sends itself (signal.SIGKILL, signal.SIGTERM).
    who: the worker index that does it; None: any process that logs the line.
    delay: seconds between the line and the signal. 0: at once, between two
      training calls. A SIGKILL that should land inside a call, as an OOM kill
      does, needs a little (0.1 s): peers then see their connections reset at
      once, where a process killed between calls is noticed only when its
      heartbeats stop (~10 s later).

  Returns:
    {"PYTHONPATH": ...}: add it to the processes' environment. `fired(directory)`
    tells afterwards whether the signal was sent.
  """
  return _add_rule(directory, text, int(sig), who, delay)


def pause_on_log(directory: str, text: str, who: int | None = None) -> dict[str, str]:
  """Like `signal_on_log`, but the process stops (for up to 600 s) until `release(directory)`.

  It stops inside the logging call, i.e. between two training calls; its
  peers wait for it in their next collective, as for a slow worker.
  """
  return _add_rule(directory, text, None, who)


def fired(directory: str, text: str | None = None) -> bool:
  """Whether every rule in `directory` (on `text`, if given) has acted."""
  rules = [r for r in _rules(directory) if text is None or r["text"] == text]
  return bool(rules) and all(os.path.exists(r["marker"]) for r in rules)


def release(directory: str) -> None:
  """Lets a process stopped by `pause_on_log(directory, ...)` go on."""
  open(os.path.join(directory, "released"), "w", encoding="utf-8").close()


def _rules(directory: str) -> list[dict]:
  path = os.path.join(directory, "rules.jsonl")
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _add_rule(directory: str, text: str, sig: int | None, who: int | None,
              delay: float = 0.0) -> dict[str, str]:
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "sitecustomize.py"), "w", encoding="utf-8") as f:
    f.write(_SITECUSTOMIZE)
  rule = {"text": text, "sig": sig, "who": who, "delay": delay,
          "marker": os.path.join(directory, f"fired-{len(_rules(directory))}"),
          "release": os.path.join(directory, "released")}
  with open(os.path.join(directory, "rules.jsonl"), "a", encoding="utf-8") as f:
    f.write(json.dumps(rule) + "\n")
  return {"PYTHONPATH": os.pathsep.join(p for p in (directory, os.environ.get("PYTHONPATH")) if p)}
