"""The client's errors and exit codes: each error is one line and one exit code.

Every failure a user or a server can cause is a ClientError subclass, caught
once at the CLI boundary (serving/client/cli.py); anything else is a bug and
keeps its traceback (exit code 1).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INPUT = 2
EXIT_REJECTED = 3
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE in sysexits.h


class ClientError(Exception):
  """An error the client reports as one line and an exit code."""

  exit_code = 1


class InputError(ClientError):
  """The local input cannot be sent: a missing or non-image file, the wrong size, bad flags."""

  exit_code = EXIT_INPUT


class BatchTooLarge(InputError):
  """The server refused a request of more images than its batching allows (max_batch_size).

  TF Serving answers INVALID_ARGUMENT "Task size N is larger than maximum
  input batch size M" (tensorflow's shared_batch_scheduler.h) when the
  request's batch exceeds its BatchingParameters' max_batch_size. The client
  cannot know M before asking, so this is the usage error it becomes: exit
  code 2, naming the limit.
  """

  def __init__(self, message: str, max_batch_size: int, sent: int):
    super().__init__(message)
    self.max_batch_size = max_batch_size
    self.sent = sent


class RequestRejected(ClientError):
  """The server answered with an error status (NOT_FOUND, INVALID_ARGUMENT, ...)."""

  exit_code = EXIT_REJECTED

  def __init__(self, message: str, code: str = "", server_message: str = ""):
    super().__init__(message)
    self.code = code
    self.server_message = server_message


class MalformedResponse(RequestRejected):
  """The server answered, but not as TF Serving serving a trainer.export model does.

  Ragged or mistyped predictions, NaN probabilities, a version that is not an
  integer, tensors declaring absurd sizes, class names that are not UTF-8: the
  server's fault, so exit code 3 like a rejection (and a RequestRejected, so
  that library callers catching "the server said no" catch this too).
  """

  def __init__(self, message: str):
    super().__init__(message, code="MALFORMED_RESPONSE")


class ServerUnavailable(ClientError):
  """The server could not be reached (UNAVAILABLE) or did not answer in time (DEADLINE_EXCEEDED)."""

  exit_code = EXIT_UNAVAILABLE

  def __init__(self, message: str, code: str):
    super().__init__(message)
    self.code = code


class StatusError(Exception):
  """A transport-level error status, before PredictClient turns it into a ClientError.

  Kept apart from ClientError because only PredictClient knows whether to
  retry it and which model to name in the message.
  """

  def __init__(self, code: str, message: str):
    super().__init__(f"{code}: {message}")
    self.code = code
    self.message = message


def first_line(text: object, limit: int = 500) -> str:
  """The first non-empty line, at most `limit` characters.

  TF error messages append graph details on later lines, and a hostile server
  can send megabytes; an error line should stay one readable line.
  """
  text = str(text)
  line = next((l.strip() for l in text.splitlines() if l.strip()), text.strip())
  return line if len(line) <= limit else line[:limit] + "..."


def show_value(value: object) -> str:
  """A short description of a decoded JSON value for a message: its type, and the value if small."""
  if isinstance(value, (dict, list)):
    return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
  try:
    text = repr(value)
  except ValueError:  # an int past Python's 4300-digit str() limit
    return f"a {type(value).__name__} too long to show"
  return text if len(text) <= 40 else f"{type(value).__name__} {text[:40]}..."
