"""The rollout tool's errors and exit codes: each failure is one message and one exit code.

Every failure an operator, the data or the server can cause is a RolloutError
subclass, caught once at the command line (serving/rollout/cli.py); anything
else is a bug and keeps its traceback (exit code 1).
"""

from __future__ import annotations

EXIT_OK = 0  # evaluated; promoted; rolled back
EXIT_UNEXPECTED = 1  # a bug: traceback
EXIT_USAGE = 2  # bad flags, an unreadable or unmanageable models.config, unreadable data
EXIT_REFUSED = 3  # promote: the candidate is shown worse or too slow; rollback: no loaded version to go back to
EXIT_FAILED = 4  # the candidate did not load, was unloaded, the server did not report a step in time, a write failed
EXIT_UNAVAILABLE = 69  # the server could not be reached (EX_UNAVAILABLE, as serving.client)


class RolloutError(Exception):
  """A failure reported as one message and an exit code; `stable` was not moved."""

  exit_code = EXIT_FAILED


class UsageError(RolloutError):
  """Bad flags, a models.config the tool cannot manage, data it cannot read."""

  exit_code = EXIT_USAGE


class Refused(RolloutError):
  """The rule said no: nothing that serves `stable` changed."""

  exit_code = EXIT_REFUSED


class StepFailed(RolloutError):
  """A step did not happen: a write failed, or the server did not report it in time."""

  exit_code = EXIT_FAILED


class CandidateFailed(StepFailed):
  """The candidate version failed to load, or stopped being served during the evaluation."""


class ServerUnreachable(RolloutError):
  exit_code = EXIT_UNAVAILABLE
