"""The rollout's steps, each a models.config edit the server must report before the next.

  evaluate:  list the candidate; wait until it is AVAILABLE; point `canary` at
             it; wait until canary answers with it; run the split through
             canary and stable; check that both still name what they did.
  promote:   evaluate, decide; if promoted, point `stable` at the candidate and
             wait until stable answers with it; if refused, withdraw the
             candidate (unlisted, canary back on stable, as the server reports).
  rollback:  point `stable` back at a version the server reports AVAILABLE.

The order is the one TF Serving accepts: a label moves only to a version the
server already reports AVAILABLE (server_core.cc refuses the whole file
otherwise). A failure at any point puts models.config back as the tool found
it, so `stable` never moves unless the rule promoted the candidate; the one
write that moves `stable` to a candidate is in `Rollout.move_stable`, called
by `promote` only after `decision.decide` said yes.

Everything here talks to a `served_config.ConfigStore` and a `server.Server`:
the command line gives the real ones (the file TF Serving polls, TF Serving
through serving.client); tests/test_rollout.py runs these steps against the TF
Serving stand-in, and its property test against a fake at the same boundary.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

from serving.client.errors import ClientError, RequestRejected, ServerUnavailable
from serving.rollout import decision as decision_lib
from serving.rollout import served_config
from serving.rollout.errors import (CandidateFailed, Refused, RolloutError, ServerUnreachable,
                                    StepFailed, UsageError)
from serving.rollout.evaluation import Evaluation, LabelMoved
from serving.rollout.served_config import CANARY, STABLE, ConfigStore, ModelView
from serving.rollout.server import Server, wait_for
from trainer import errors as trainer_errors

AVAILABLE = "AVAILABLE"


class Rollout:
  """One model's labels, moved one reported step at a time.

  Args:
    store: models.config, as TF Serving polls it.
    server: TF Serving (or its proxy), read only.
    timeout_s: how long each step may take to be reported: a file-system poll
      (30 s in k8s/serving.yaml), a load with warm-up, a config poll (60 s).
    poll_s: seconds between two reads of the server's status.
    say: progress messages, one line each.
  """

  def __init__(self, store: ConfigStore, server: Server, model: str, timeout_s: float,
               poll_s: float, say: Callable[[str], None] = lambda line: None,
               clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep):
    self.store, self.server, self.model = store, server, model
    self.timeout_s, self.poll_s = timeout_s, poll_s
    self.say, self.clock, self.sleep = say, clock, sleep

  # ------------------------------------------------------------ reading

  def read(self):
    """(text, parsed config, this model's view) of models.config as it is now."""
    text = self.store.read()
    config = served_config.parse(text, self.store.describe())
    return text, config, served_config.view(config, self.model, self.store.describe())

  def stable(self, view: ModelView) -> int:
    if STABLE not in view.labels:
      raise UsageError(f"model {self.model!r} in {self.store.describe()} has no {STABLE!r} label "
                       "to compare with (serving/models.config sets one)")
    return view.labels[STABLE]

  def _ask(self, read: Callable[[], object]):
    """A read of the server; a client error becomes the rollout's (ServerUnreachable, StepFailed)."""
    try:
      return read()
    except ClientError as e:
      raise _translate(e, None) from e

  def states(self) -> dict:
    return self._ask(lambda: self.server.states(self.model))

  def label_version(self, label: str) -> Optional[int]:
    return self._ask(lambda: self.server.label_version(self.model, label))

  def _state(self, version: int) -> Optional[str]:
    status = self.states().get(version)
    return status.state if status else None

  def _wait(self, check: Callable[[], Optional[object]], what: str):
    return wait_for(check, what, self.timeout_s, self.poll_s, self.clock, self.sleep, self.say)

  def _write(self, text: str, what: str) -> None:
    self.store.write(text)
    self.say(f"wrote {self.store.describe()}: {what}; waiting for the server to report it")

  # ------------------------------------------------------------ steps

  def in_sync(self, view: ModelView) -> int:
    """Waits until the server serves `stable` as models.config says; returns that version."""
    stable = self.stable(view)
    self._wait(lambda: True if (self._state(stable) == AVAILABLE and
                                self.label_version(STABLE) == stable) else None,
               f"{STABLE!r} -> version {stable} AVAILABLE, as {self.store.describe()} says")
    return stable

  def load(self, candidate: int) -> None:
    """Lists `candidate` (if it is not) and waits until the server reports it AVAILABLE.

    Raises:
      CandidateFailed: the server reports its load failed (with its error).
    """
    text, config, view = self.read()
    # The server reports a version's last state until it manages that version
    # again, at its next models.config poll: a load that failed in an earlier
    # run still reads END with its old error. Only a failure reported after a
    # change from that counts; one identical to it is waited out (--timeout-s).
    stale = self.states().get(candidate)
    if candidate not in view.versions:
      self._write(served_config.render(served_config.edited(
          config, self.model, listed=view.versions + (candidate,)), text),
          f"version {candidate} listed")
    changed = [stale is None or stale.state != "END"]

    def available():
      status = self.states().get(candidate)
      if status and status.state == AVAILABLE:
        return True
      changed[0] = changed[0] or status != stale
      if status and status.state == "END" and status.error and changed[0]:
        raise CandidateFailed(f"version {candidate} of {self.model} failed to load: {status.error}")
      return None

    self._wait(available, f"version {candidate} AVAILABLE")
    self.say(f"version {candidate} is AVAILABLE")

  def point(self, label: str, version: int) -> None:
    """Moves `label` to `version`, which the server must report AVAILABLE now; waits until it answers.

    Raises:
      CandidateFailed: `version` is not AVAILABLE, before or while waiting.
    """
    def still_available() -> None:
      state = self._state(version)
      if state != AVAILABLE:
        raise CandidateFailed(f"version {version} of {self.model} is {state or 'unknown'} on the "
                              f"server, not AVAILABLE: {label!r} cannot move to it")

    still_available()
    text, config, view = self.read()
    self._write(served_config.render(served_config.edited(
        config, self.model, labels={**view.labels, label: version}), text),
        f"{label!r} -> version {version}")

    def moved():
      still_available()
      return True if self.label_version(label) == version else None

    self._wait(moved, f"{label!r} answering with version {version}")
    self.say(f"{label!r} answers with version {version}")

  def _rewrite(self, text: str, what: str) -> str:
    """Writes models.config as `text` (if it is not) and waits until stable and canary answer as
    it says (either may have moved: canary in evaluate, stable in move_stable).

    Returns:
      What went wrong, or "".
    """
    try:
      current = self.store.read()
      if current == text:
        return ""
      try:
        was_listed = served_config.view(served_config.parse(current), self.model).versions
      except RolloutError:  # not a file the tool can read now: still write `text` back
        was_listed = ()
      self._write(text, what)
      view = served_config.view(served_config.parse(text), self.model)
      for label in (STABLE, CANARY):
        if label in view.labels:
          version = view.labels[label]
          self._wait(lambda label=label, version=version:
                     True if self.label_version(label) == version else None,
                     f"{label!r} back on version {version}")
      # And until what it unlists is unloaded: a run started at once would
      # otherwise find the version still AVAILABLE, list it, and then see it
      # unload under it (exit 4).
      for version in sorted(set(was_listed) - set(view.versions)):
        self._wait(lambda version=version: True if self._state(version) != AVAILABLE else None,
                   f"version {version} unloaded")
      return ""
    except (RolloutError, ClientError) as e:
      return str(e)

  def restore(self, text: str) -> str:
    """Writes models.config back to `text`; best effort. Returns what went wrong, or ""."""
    failed = self._rewrite(text, "put back as it was")
    return f" (putting {self.store.describe()} back also failed: {failed})" if failed else ""

  def withdraw(self, candidate: int, baseline: int, before: str) -> str:
    """Takes a refused candidate out: unlisted, `canary` on `baseline`; waits until canary answers.

    Built from `before`, models.config as the run found it, so nothing else
    changes. Putting `before` back is not enough: after an `evaluate` of the
    same candidate it already lists it with canary on it. A label other than
    canary that names the candidate keeps it listed (TF Serving refuses a
    label on a version it does not load); `stable` cannot (evaluate refuses).

    Returns:
      What was done (or why it was not), for the message.
    """
    where = self.store.describe()
    config = served_config.parse(before, where)
    view = served_config.view(config, self.model, where)
    keeping = sorted(label for label, version in view.labels.items()
                     if version == candidate and label != CANARY)
    listed = tuple(v for v in view.versions if v != candidate or keeping)
    labels = {**view.labels, CANARY: baseline}
    if listed == view.versions and labels == view.labels:
      text = before  # the file as the run found it, byte for byte
    else:
      text = served_config.render(served_config.edited(config, self.model, listed=listed,
                                                       labels=labels), before)
    failed = self._rewrite(text, f"version {candidate} withdrawn")
    if failed:
      return (f"withdrawing version {candidate} failed ({failed}): {where} may still list it "
              f"with {CANARY!r} on it")
    unlisted = (f"still listed in {where} ({', '.join(map(repr, keeping))} names it)" if keeping
                else f"unlisted from {where}")
    return f"version {candidate} withdrawn: {unlisted}, {CANARY!r} back on version {baseline}"

  def move_stable(self, candidate: int, baseline: int, before: str) -> None:
    """THE step that moves `stable` to a candidate: only after the rule promoted it.

    On failure models.config goes back to `before`, as the run found it (not
    only stable's line: the candidate would stay listed with canary on it),
    and the tool waits until stable answers with `baseline` again.
    """
    try:
      self.point(STABLE, candidate)
    except RolloutError as e:
      note = self.restore(before)
      labels = served_config.view(served_config.parse(before), self.model).labels
      said = ", ".join(f"{label!r} on version {labels[label]}"
                       for label in (STABLE, CANARY) if label in labels)
      raise type(e)(f"{e}; {self.store.describe()} put back as it was before the run ({said})"
                    f"{note}") from e


def _translate(e: Exception, candidate: Optional[int]) -> RolloutError:
  """A client error or a moved label during the evaluation, as the rollout reports it."""
  if isinstance(e, RolloutError):
    return e
  if isinstance(e, LabelMoved):
    return CandidateFailed(str(e))
  if isinstance(e, ServerUnavailable):
    return ServerUnreachable(str(e))
  if isinstance(e, RequestRejected) and e.code == "NOT_FOUND":
    return CandidateFailed(f"a label's version stopped being served during the evaluation "
                           f"(candidate {candidate} unloaded?): {e}" if candidate is not None
                           else str(e))
  if isinstance(e, RequestRejected):
    return StepFailed(str(e))
  return UsageError(str(e))  # InputError: the data do not fit the model


# (candidate, baseline) -> the figures; raises ClientError, LabelMoved, RolloutError.
Measure = Callable[[int, int], Evaluation]


def evaluate(rollout: Rollout, candidate: int, measure: Measure) -> tuple[Evaluation, int, str]:
  """Loads the candidate, points canary at it, measures both labels.

  Returns:
    (figures, the baseline (stable's version), models.config's text before
    the tool changed it).

  Raises:
    RolloutError: models.config is back as it was, `stable` untouched; also
      for the data's errors (UsageError). Anything else (KeyboardInterrupt)
      is raised again once models.config is back as it was.
  """
  text, _, view = rollout.read()
  baseline = rollout.stable(view)
  if candidate == baseline:
    raise UsageError(f"version {candidate} is already {STABLE!r}: nothing to evaluate")
  rollout.in_sync(view)
  try:
    rollout.load(candidate)
    rollout.point(CANARY, candidate)
    figures = measure(candidate, baseline)
    # REST responses do not name their version: check the labels still name
    # what they did, and the candidate is still loaded, after the last request.
    state = rollout._state(candidate)  # pylint: disable=protected-access
    if state != AVAILABLE:
      raise CandidateFailed(f"version {candidate} was unloaded during the evaluation (now "
                            f"{state or 'unknown'}): its figures cannot be trusted")
    for label, version in ((CANARY, candidate), (STABLE, baseline)):
      served = rollout.label_version(label)
      if served != version:
        raise CandidateFailed(str(LabelMoved(label, version, served)))
  except BaseException as e:  # pylint: disable=broad-except
    # Whatever ends the run here (Ctrl-C, an image that fails at full decode,
    # a bug) must not leave the candidate listed with canary on it.
    if isinstance(e, (RolloutError, ClientError, LabelMoved)):
      error = _translate(e, candidate)
    elif isinstance(e, trainer_errors.UserError):  # the data, read batch by batch
      error = UsageError(f"the data failed during the evaluation: {e}")
    else:
      note = rollout.restore(text)
      rollout.say(f"{type(e).__name__} during the evaluation: {rollout.store.describe()} put "
                  f"back as it was{note}; {STABLE!r} untouched on version {baseline}")
      raise
    note = rollout.restore(text)
    raise type(error)(f"{error}{note}; {STABLE!r} untouched on version {baseline}") from e
  return figures, baseline, text


def promote(rollout: Rollout, candidate: int, measure: Measure, significance: float,
            max_p99_ms: Optional[float],
            on_decision: Callable[[Evaluation, decision_lib.Decision], None] = lambda e, d: None
            ) -> tuple[Evaluation, decision_lib.Decision]:
  """Evaluates, decides, and moves `stable` only if the rule promotes the candidate.

  `on_decision` runs once the decision is known, before anything acts on it
  (the command line writes the evaluation record there).

  Raises:
    Refused: the candidate is shown worse or too slow; it is withdrawn:
      models.config as it was before the run, but with the candidate unlisted
      and canary on stable (also when an earlier evaluate had listed it).
    RolloutError: a step failed; models.config is back as it was before the
      run, and stable answers with the baseline (also if moving it failed).
  """
  figures, baseline, before = evaluate(rollout, candidate, measure)
  try:
    decided = decision_lib.decide(figures, significance, max_p99_ms)
    on_decision(figures, decided)
  except BaseException as e:  # Ctrl-C while the record is written: not with canary on the candidate
    note = rollout.restore(before)
    rollout.say(f"{type(e).__name__} before the decision was acted on: "
                f"{rollout.store.describe()} put back as it was{note}")
    raise
  if not decided.promote:
    withdrawn = rollout.withdraw(candidate, baseline, before)
    raise Refused("; ".join(decided.reasons) + f". {STABLE!r} stays on version {baseline}; "
                  f"{withdrawn}")
  rollout.move_stable(candidate, baseline, before)
  return figures, decided


def rollback(rollout: Rollout, to: Optional[int]) -> tuple[int, int]:
  """Moves `stable` back to `to`, which must be listed and reported AVAILABLE.

  Returns:
    (the version stable left, the version it now names).

  Raises:
    Refused: no version to go back to, or it is not loaded.
  """
  text, _, view = rollout.read()
  current = rollout.in_sync(view)
  if to is None:
    raise Refused(f"no earlier {STABLE!r} version is recorded for version {current}: give --to N")
  if to == current:
    raise UsageError(f"version {to} is already {STABLE!r}")
  state = rollout._state(to)  # pylint: disable=protected-access
  if to not in view.versions or state != AVAILABLE:
    raise Refused(f"cannot roll {STABLE!r} back to version {to}: it is "
                  f"{'not listed in ' + rollout.store.describe() if to not in view.versions else (state or 'unknown') + ' on the server'}"
                  f", not loaded. List it and wait until it is AVAILABLE, or roll back to a loaded "
                  f"version (listed: {', '.join(map(str, view.versions))})")
  try:
    rollout.point(STABLE, to)
  except RolloutError as e:
    note = rollout.restore(text)
    raise type(e)(f"{e}; {STABLE!r} put back on version {current}{note}") from e
  return current, to
