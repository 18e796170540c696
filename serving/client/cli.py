"""`python -m serving.client`: flags, the run, and the one place errors become exit codes.

See serving/client/__init__.py for usage and the table of exit codes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Callable, Optional, Sequence

import numpy as np

from serving.client.errors import EXIT_INPUT, EXIT_OK, EXIT_REJECTED, EXIT_UNAVAILABLE, ClientError, InputError
from serving.client.images import check_image, load_encoded, load_pixels
from serving.client.metadata import DEFAULT_SIGNATURE, ENCODED_SIGNATURE
from serving.client.predict_client import (DEFAULT_ATTEMPTS, DEFAULT_BACKOFF_S, DEFAULT_TIMEOUT_S,
                                           PredictClient)

# The package's logger: PredictClient's retry warnings reach it by propagation.
log = logging.getLogger("serving.client")

# Images per request. Fits one server-side batch (max_batch_size 64 in
# serving/batching_parameters.txt), and keeps a REST body of 32x32x3 images
# as JSON under ~1 MB. A larger --batch-size than the server's max_batch_size
# is refused by the server; the client then says so and exits 2
# (errors.BatchTooLarge).
DEFAULT_BATCH_SIZE = 32


def printable(text: str) -> str:
  """`text` with every non-printable character escaped as Python's repr does (\\x1b, \\n, \\u200b).

  Class names and error messages come from the server: a hostile one could
  otherwise send terminal escape sequences (recolour, retitle, clear the
  screen) or break the one-line-per-file and one-line-per-error output.
  """
  if text.isprintable():
    return text
  return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class _Parser(argparse.ArgumentParser):
  """argparse with errors as one `error: ` line and exit code 2."""

  def error(self, message):
    raise InputError(f"{message} (see --help)")


def _positive(kind: type) -> Callable[[str], Any]:
  def parse(text: str):
    try:
      value = kind(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:  # also refuses nan
      raise argparse.ArgumentTypeError(f"{text} must be > 0")
    if value == float("inf"):  # a deadline or a sleep of inf seconds raises OverflowError
      raise argparse.ArgumentTypeError(f"{text} must be a finite number of seconds")
    return value
  return parse


def _non_negative_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
  if value < 0:
    raise argparse.ArgumentTypeError(f"{text} must be >= 0")
  return value


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(
      prog="python -m serving.client",
      description="Classify image files with a model served by TF Serving (REST or gRPC) and "
                  "print the top classes with their probabilities.",
      epilog=f"Exit codes: 0 ok, {EXIT_INPUT} bad local input (file, size, flags), "
             f"{EXIT_REJECTED} the server rejected the request (NOT_FOUND, INVALID_ARGUMENT, ...) "
             f"or sent a malformed response, "
             f"{EXIT_UNAVAILABLE} the server could not be reached or timed out.")
  server = parser.add_mutually_exclusive_group(required=True)
  server.add_argument("--rest", metavar="URL", help="TF Serving's REST API, e.g. http://HOST:8501.")
  server.add_argument("--grpc", metavar="HOST:PORT", help="TF Serving's gRPC API, e.g. HOST:8500.")
  parser.add_argument("--model", required=True, help="Model name in TF Serving, e.g. cifar10.")
  which = parser.add_mutually_exclusive_group()
  which.add_argument("--version", type=_non_negative_int, help="Model version (default: the latest).")
  which.add_argument("--label", help="Version label from models.config, e.g. stable or canary.")
  parser.add_argument("--top-k", type=_positive(int), default=3,
                      help="Classes to print per image (default: 3).")
  parser.add_argument("--encoded", action="store_true",
                      help=f"Send the file bytes to the {ENCODED_SIGNATURE} signature instead of "
                           f"decoded pixels to {DEFAULT_SIGNATURE}.")
  parser.add_argument("--resize", action="store_true",
                      help="Resize and convert channels to what the model takes (default: refuse "
                           "images that do not fit).")
  parser.add_argument("--timeout", type=_positive(float), default=DEFAULT_TIMEOUT_S,
                      help=f"Seconds to wait for each answer (default: {DEFAULT_TIMEOUT_S:g}).")
  parser.add_argument("--batch-size", type=_positive(int), default=DEFAULT_BATCH_SIZE,
                      help=f"Images per request (default: {DEFAULT_BATCH_SIZE}); at most the "
                           "server's max_batch_size (64 in serving/batching_parameters.txt).")
  parser.add_argument("--retry-backoff-s", type=_positive(float), default=DEFAULT_BACKOFF_S,
                      metavar="SECONDS",
                      help=f"Seconds before retrying a server that is UNAVAILABLE, doubling for the "
                           f"next retry; {DEFAULT_ATTEMPTS} attempts in all (default: "
                           f"{DEFAULT_BACKOFF_S:g}). Raise it for a server that takes longer to "
                           "restart.")
  parser.add_argument("--json", action="store_true", help="Print one JSON object instead of text.")
  parser.add_argument("files", nargs="+", metavar="FILE", help="Image files (PNG, JPEG, GIF, BMP, WebP, ...).")
  return parser


def run(args: argparse.Namespace, out=sys.stdout) -> None:
  """Classifies `args.files` and prints the results."""
  for path in args.files:
    check_image(path)  # a bad file is the user's to fix, whatever the server's state
  kwargs = dict(version=args.version, label=args.label, timeout_s=args.timeout,
                backoff_s=args.retry_backoff_s)
  client = (PredictClient.rest(args.rest, args.model, **kwargs) if args.rest
            else PredictClient.grpc(args.grpc, args.model, **kwargs))
  with client:
    metadata = client.metadata()
    shape = metadata.image_shape()
    load = load_encoded if args.encoded else load_pixels
    # Every file is checked before anything is sent, so a bad file costs no request.
    inputs = [load(path, shape, args.model, args.resize) for path in args.files]
    results = []
    for start in range(0, len(inputs), args.batch_size):
      chunk = inputs[start:start + args.batch_size]
      result = client.predict_encoded(chunk) if args.encoded else client.predict(np.stack(chunk))
      results.append(result)
  top = [row for r in results for row in r.top_k(args.top_k)]
  # gRPC responses name the version that answered; REST ones do not, so REST
  # reports the version whose metadata was read just before.
  version = next((r.version for r in results if r.version is not None), metadata.version)
  if args.json:
    # json.dump's ensure_ascii escapes control characters (\u001b) itself, and
    # a reader gets the class names back exactly as the server sent them.
    json.dump({"model": args.model, "version": version,
               "signature": ENCODED_SIGNATURE if args.encoded else DEFAULT_SIGNATURE,
               "predictions": [{"file": path, "top_k": [{"class": name, "probability": p}
                                                        for name, p in row]}
                               for path, row in zip(args.files, top)]}, out, indent=2)
    out.write("\n")
    return
  for path, row in zip(args.files, top):
    out.write(printable(f"{path}: " + ", ".join(f"{name} {p:.3f}" for name, p in row)) + "\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the command line; returns the exit code."""
  # A terminal that cannot show a character gets its escape, not a traceback.
  for stream in (sys.stdout, sys.stderr):
    if hasattr(stream, "reconfigure"):
      stream.reconfigure(errors="backslashreplace")
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(_PrintableFormatter("warning: %(message)s"))
  log.addHandler(handler)
  log.setLevel(logging.WARNING)
  propagate, log.propagate = log.propagate, False
  try:
    args = build_parser().parse_args(argv)
    run(args)
  except ClientError as e:
    print(f"error: {printable(str(e))}", file=sys.stderr)
    return e.exit_code
  finally:
    log.removeHandler(handler)
    log.propagate = propagate
  return EXIT_OK


class _PrintableFormatter(logging.Formatter):
  def format(self, record: logging.LogRecord) -> str:
    return printable(super().format(record))
