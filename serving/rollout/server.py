"""What TF Serving reports, through serving.client: version states, and where a label points.

The tool never assumes a change took effect: TF Serving loads a newly listed
version at its next file-system poll (--file_system_poll_wait_seconds) and
sees an edited models.config at its next config poll
(--model_config_file_poll_wait_seconds). So each step waits, with a timeout,
until the server REPORTS it: GetModelStatus (REST GET /v1/models/NAME) for a
version's state, GetModelMetadata by label for the version a label names.
Both pass the serving proxy; nothing here can reload the config (the client
has no such call).
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Protocol, TypeVar

from serving.client import PredictClient, RequestRejected, ServerUnavailable, VersionStatus
from serving.client.errors import ClientError
from serving.rollout.errors import ServerUnreachable, StepFailed, UsageError

_T = TypeVar("_T")


class Server(Protocol):
  """The reads the rollout makes of TF Serving."""

  def describe(self) -> str: ...

  def states(self, model: str) -> dict[int, VersionStatus]:
    """Every version the server knows of `model`, by number ({} while it knows none)."""

  def label_version(self, model: str, label: str) -> Optional[int]:
    """The version `label` resolves to now; None while the label is unknown or its version not served."""


class TfServing:
  """A TF Serving (or its proxy) over REST (http://HOST:8501) or gRPC (HOST:8500, unix:PATH)."""

  def __init__(self, target: str, protocol: str, timeout_s: float):
    if protocol not in ("rest", "grpc"):
      raise UsageError(f"--protocol {protocol!r}: rest or grpc")
    self.target = target
    self.protocol = protocol
    self.timeout_s = timeout_s

  def describe(self) -> str:
    return self.target

  def client(self, model: str, label: Optional[str] = None, attempts: int = 1) -> PredictClient:
    """A fresh client (its metadata is cached per client, so label checks take a new one)."""
    try:
      make = PredictClient.rest if self.protocol == "rest" else PredictClient.grpc
      return make(self.target, model, label=label, timeout_s=self.timeout_s, attempts=attempts)
    except ClientError as e:  # a malformed --server
      raise UsageError(str(e)) from e

  def states(self, model: str) -> dict[int, VersionStatus]:
    with self.client(model) as client:
      try:
        return {s.version: s for s in client.status()}
      except RequestRejected as e:
        if e.code == "NOT_FOUND":  # nothing known of the model yet
          return {}
        raise

  def label_version(self, model: str, label: str) -> Optional[int]:
    with self.client(model, label) as client:
      try:
        return client.metadata().version
      except RequestRejected as e:
        # INVALID_ARGUMENT: an unknown label; NOT_FOUND: its version is not loaded.
        if e.code in ("NOT_FOUND", "INVALID_ARGUMENT"):
          return None
        raise


def wait_for(check: Callable[[], Optional[_T]], what: str, timeout_s: float, poll_s: float,
             clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep,
             say: Callable[[str], None] = lambda line: None) -> _T:
  """Calls `check` every `poll_s` s until it returns something other than None; returns that.

  A server that cannot be reached meanwhile (restarting, or its proxy
  between pods) is waited for like any other "not yet", and `say` is told
  once each time it stops answering, so that a wrong --server is not a
  silent wait of --timeout-s; other errors end the wait at once.

  Raises:
    StepFailed: `timeout_s` s passed without it (the message names `what`).
    ServerUnreachable: the server was unreachable for the whole wait.
  """
  deadline = clock() + timeout_s
  unreachable: Optional[Exception] = None
  while True:
    try:
      result = check()
      unreachable = None
      if result is not None:
        return result
    except (ServerUnavailable, ServerUnreachable) as e:  # the client's, or as the steps report it
      if unreachable is None:
        say(f"the server cannot be reached ({e}); waiting for {what}, up to --timeout-s "
            f"{timeout_s:g} s")
      unreachable = e
    if clock() >= deadline:
      if unreachable is not None:
        raise ServerUnreachable(f"{what}: the server could not be reached for {timeout_s:g} s "
                                f"({unreachable})") from unreachable
      raise StepFailed(f"the server did not report {what} within --timeout-s {timeout_s:g} s")
    sleep(poll_s)
