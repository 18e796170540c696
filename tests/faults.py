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
# `sig` stop until the release file exists; or, instead of a message, a folder
# (`rename_into`): the process sends itself `sig` as it renames a path into it; or a
# module (`import_of`): it sends itself `sig` as it starts importing that module.
# Each rule names what triggers it (`on`: log, rename or import) and acts
# once (its marker file), so the rerun (the same command, the same
# environment) runs on. With `in_call`, a thread sends the signal once the
# main thread is inside TensorFlow's execution of the next call: its innermost
# Python frame has been tensorflow/python/eager/execute.py's quick_execute,
# waiting in C++, for 20 ms.
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

def _signal_inside_the_next_call(sig, main):
  # The training call is the first execution that lasts: the small ones around
  # it (summaries, metrics) take well under a millisecond, the call tens at least.
  deadline, inside, since = time.time() + 60, None, 0.0
  while time.time() < deadline:
    frame = sys._current_frames().get(main)
    if frame is None or frame.f_code.co_name != "quick_execute":
      inside = None
    elif frame is not inside:
      inside, since = frame, time.time()
    elif time.time() - since > 0.02:
      break
    time.sleep(0.001)
  os.kill(os.getpid(), sig)

def _claim(rule):
  # Whether `rule` acts in this process now: its worker, not yet acted; marks it if so.
  if rule["who"] not in (None, _index()) or os.path.exists(rule["marker"]):
    return False
  open(rule["marker"], "w").close()
  for stream in (sys.stdout, sys.stderr):
    stream.flush()
  return True

def _handle_then_act(self, record):
  _handle(self, record)
  for rule in _RULES:
    if rule["on"] == "log" and rule["text"] in record.getMessage() and _claim(rule):
      if rule["sig"] is not None and rule["in_call"]:
        threading.Thread(target=_signal_inside_the_next_call,
                         args=(rule["sig"], threading.get_ident()), daemon=True).start()
      elif rule["sig"] is not None:
        os.kill(os.getpid(), rule["sig"])
      deadline = time.time() + 600
      while rule["sig"] is None and not os.path.exists(rule["release"]) and time.time() < deadline:
        time.sleep(0.05)

logging.Logger.handle = _handle_then_act

def _signal_on_audit(event, args):
  # CPython raises "os.rename" for os.rename and os.replace alike, and "import" as it
  # starts loading a module that is not loaded yet.
  for rule in _RULES:
    renamed_into = (event == "os.rename" and rule["on"] == "rename"
                    and os.fspath(args[1]).startswith(rule["rename_into"]))
    imported = event == "import" and rule["on"] == "import" and rule["import_of"] == args[0]
    if (renamed_into or imported) and _claim(rule):
      os.kill(os.getpid(), rule["sig"])

if any(rule["on"] != "log" for rule in _RULES):
  sys.addaudithook(_signal_on_audit)
"""


def signal_on_log(directory: str, text: str, sig: int, who: int | None = None,
                  in_call: bool = False) -> dict[str, str]:
  """Environment for trainer processes, one of which signals itself once, after logging `text`.

  Args:
    directory: a folder of the test's for the sitecustomize, its rules and markers;
      each call adds a rule there.
    text: a substring of the log message (e.g. "epoch 2/2 step 4/31").
    sig: the signal it sends itself (signal.SIGKILL, signal.SIGTERM).
    who: the worker index that does it; None: any process that logs the line.
    in_call: False: the signal comes at once, between two training calls. True:
      inside the next call, once TensorFlow executes it, as an OOM kill lands:
      a SIGKILL there resets the connections of the collective under way, and
      the peers fail at once naming the lost worker, where a process killed
      between calls is noticed only when its heartbeats stop (~10 s later),
      and not always by name.

  Returns:
    {"PYTHONPATH": ...}: add it to the processes' environment. `fired(directory)`
    tells afterwards whether the signal was sent.
  """
  return _add_rule(directory, text, int(sig), who, in_call)


def signal_on_rename(directory: str, into: str, sig: int, who: int | None = None) -> dict[str, str]:
  """Like `signal_on_log`, but the process signals itself at its first rename of a path
  into the folder `into` (an audit hook: os.rename or os.replace), before the rename.

  For a point that a log line cannot catch in time: the export publishes a staged
  version by one rename into JOB_DIR/export/ (trainer/storage/local.py) ~0.3 s after
  its last log line, less than a loaded machine may take to act on that line.
  """
  return _add_rule(directory, "", int(sig), who, rename_into=os.path.join(into, ""))


def signal_on_import(directory: str, module: str, sig: int) -> dict[str, str]:
  """Like `signal_on_log`, but the process signals itself as it starts importing `module`
  (an audit hook: CPython's "import" event, raised for a module not loaded yet).

  For points of a start-up that logs nothing: inside TensorFlow's import, say, which
  takes seconds on one machine and a fraction of that on another.
  """
  return _add_rule(directory, "", int(sig), None, import_of=module)


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
              in_call: bool = False, rename_into: str | None = None,
              import_of: str | None = None) -> dict[str, str]:
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "sitecustomize.py"), "w", encoding="utf-8") as f:
    f.write(_SITECUSTOMIZE)
  on = "rename" if rename_into else "import" if import_of else "log"  # what triggers it
  rule = {"on": on, "text": text, "sig": sig, "who": who, "in_call": in_call,
          "rename_into": rename_into, "import_of": import_of,
          "marker": os.path.join(directory, f"fired-{len(_rules(directory))}"),
          "release": os.path.join(directory, "released")}
  with open(os.path.join(directory, "rules.jsonl"), "a", encoding="utf-8") as f:
    f.write(json.dumps(rule) + "\n")
  return {"PYTHONPATH": os.pathsep.join(p for p in (directory, os.environ.get("PYTHONPATH")) if p)}
