"""`python -m serving.rollout` / `cnn-rollout`: flags, the report, and the one place errors become exit codes.

See serving/rollout/__init__.py for usage and the table of exit codes.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Optional, Sequence

from serving.client.cli import printable
from serving.client.errors import ClientError
from serving.rollout import candidate as candidate_lib
from serving.rollout import decision as decision_lib
from serving.rollout import evaluation as evaluation_lib
from serving.rollout import record as record_lib
from serving.rollout import served_config
from serving.rollout import steps
from serving.rollout.errors import (EXIT_FAILED, EXIT_OK, EXIT_REFUSED, EXIT_UNAVAILABLE,
                                    EXIT_USAGE, Refused, RolloutError, UsageError)
from serving.rollout.server import TfServing

DEFAULT_TIMEOUT_S = 300.0  # a file-system poll (30 s) + a load with warm-up + a config poll (60 s), with margin
DEFAULT_POLL_S = 2.0
DEFAULT_SIGNIFICANCE = 0.05


class _Parser(argparse.ArgumentParser):
  def error(self, message):
    raise UsageError(f"{message} (see --help)")


def _number(kind: type, low: float, high: float = float("inf"), low_open: bool = False,
            finite: bool = False):
  def parse(text: str):
    try:
      value = kind(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (low < value if low_open else low <= value) or not value <= high:
      raise argparse.ArgumentTypeError(f"{text} is out of range")
    if finite and value == float("inf"):  # time.sleep(inf), a deadline of inf: OverflowError
      raise argparse.ArgumentTypeError(f"{text} must be a finite number of seconds")
    return value
  return parse


def _candidate(text: str):
  if text in ("latest", "next"):
    return text
  return _number(int, 0)(text)


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(prog="python -m serving.rollout",
                   description="Evaluate a published model version through TF Serving against "
                               "`stable`, and promote it or roll back, through models.config only.",
                   epilog=f"Exit codes: {EXIT_OK} done, {EXIT_USAGE} usage, {EXIT_REFUSED} refused "
                          f"(stable unchanged), {EXIT_FAILED} a step failed (stable unchanged), "
                          f"{EXIT_UNAVAILABLE} server unreachable, 1 a bug.")
  commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
  for name, help_text in (("evaluate", "list the candidate, point canary at it, compare it with stable"),
                          ("promote", "evaluate, then move stable to the candidate if the rule allows"),
                          ("rollback", "move stable back to the previous (still loaded) version")):
    command = commands.add_parser(name, help=help_text, description=help_text)
    command.add_argument("--model", required=True, help="Model name in models.config, e.g. cifar10.")
    command.add_argument("--config", required=True, metavar="PATH",
                         help="The models.config TF Serving polls (its --model_config_file), local "
                              "or gs://.")
    command.add_argument("--server", required=True,
                         help="TF Serving or its proxy: http://HOST:8501 (REST) or HOST:8500 (gRPC).")
    command.add_argument("--protocol", choices=("rest", "grpc"),
                         help="Default: rest for an http(s):// --server, else grpc.")
    command.add_argument("--timeout-s", type=_number(float, 0, low_open=True), default=DEFAULT_TIMEOUT_S,
                         help=f"Seconds each step may take to be reported by the server (default "
                              f"{DEFAULT_TIMEOUT_S:g}: k8s/serving.yaml polls files every 30 s and "
                              "models.config every 60 s).")
    command.add_argument("--poll-s", type=_number(float, 0, low_open=True, finite=True),
                         default=DEFAULT_POLL_S,
                         help=f"Seconds between status reads (default {DEFAULT_POLL_S:g}).")
    command.add_argument("--request-timeout-s", type=_number(float, 0, low_open=True, finite=True),
                         default=30.0,
                         help="Seconds to wait for each request's answer (default 30).")
    command.add_argument("--records", metavar="DIR",
                         help="Where evaluation records go (default: the model's base_path/"
                              f"{record_lib.FOLDER}, beside the versions).")
    command.add_argument("--base-path", metavar="PATH",
                         help="The model's versions as this tool reads them (default: its "
                              "base_path in models.config), e.g. where that bucket is mounted.")
    command.add_argument("--json", action="store_true", help="Print the record as JSON on stdout.")
    if name == "rollback":
      command.add_argument("--to", type=_number(int, 0),
                           help="The version to go back to (default: the stable version before the "
                                "current one, from the records).")
      continue
    command.add_argument("--candidate", type=_candidate, required=True,
                         help="The published version to evaluate; `latest`: the newest complete "
                              "version under the base path; `next`: the newest complete version "
                              "above every listed one, waiting up to --wait-s for the trainer to "
                              "publish it (a Job applied with training: overlays/rollout).")
    command.add_argument("--wait-s", type=_number(float, 0), default=0.0,
                         help="With --candidate next: seconds to wait for a new version (default 0).")
    command.add_argument("--data", required=True,
                         help="A TFDS data_dir holding --dataset prepared (local or gs://), or "
                              "folder:PATH for PATH/{train,test}/<label>/*.png.")
    command.add_argument("--dataset", help="TFDS dataset name (default: --model).")
    command.add_argument("--split", default="test",
                         help="The held-out split, TFDS slicing allowed, also of an image "
                              "folder's train/ and test/ (default: test).")
    command.add_argument("--image-size", type=_number(int, 16),
                         help="Resize images as training did with --image-size.")
    command.add_argument("--batch-size", type=_number(int, 1, evaluation_lib.MAX_BATCH),
                         default=evaluation_lib.MAX_BATCH,
                         help=f"Images per request, at most {evaluation_lib.MAX_BATCH} (TF Serving's "
                              f"max_batch_size; default {evaluation_lib.MAX_BATCH}).")
    command.add_argument("--significance", type=_number(float, 0, 1, low_open=True),
                         default=DEFAULT_SIGNIFICANCE,
                         help="The test's level: a candidate is worse when p(candidate worse) is "
                              f"below it (default {DEFAULT_SIGNIFICANCE:g}).")
    command.add_argument("--max-p99-ms", type=_number(float, 0, low_open=True),
                         help="promote also needs the candidate's p99 latency per request at most this.")
  return parser


class _Progress:
  """A tqdm bar on a terminal; plain lines (every 10%) otherwise, e.g. in a pod's log."""

  def __init__(self, total: int, stream):
    self.total, self.stream, self.done, self.next_line = total, stream, 0, 0.1
    self.bar = None
    if stream.isatty():
      from tqdm import tqdm  # pylint: disable=import-outside-toplevel
      self.bar = tqdm(total=total, unit="image", file=stream, desc="evaluating")

  def __call__(self, n: int) -> None:
    self.done += n
    if self.bar is not None:
      self.bar.update(n)
    elif self.done >= self.next_line * self.total or self.done == self.total:
      print(f"evaluated {self.done}/{self.total} images", file=self.stream, flush=True)
      while self.next_line * self.total <= self.done:
        self.next_line += 0.1

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


def _measure(server: TfServing, model: str, split_args, stream,
             fits: Callable[[object], None] = lambda split: None) -> tuple[steps.Measure, dict]:
  """The measurement the steps call once canary names the candidate, and the data's description.

  The data are loaded here, before any step, and `fits` checks them against
  what the versions' files say: a bad --data or --split, or data of another
  model, fails (exit 2) before models.config or the server is touched, not
  after canary has moved.
  """
  from serving.rollout import data as data_lib  # pylint: disable=import-outside-toplevel
  split = data_lib.load(*split_args)
  fits(split)
  described = dict(split.description)

  def measure(candidate: int, baseline: int) -> evaluation_lib.Evaluation:
    clients = {label: server.client(model, label, attempts=3)
               for label in (served_config.CANARY, served_config.STABLE)}
    try:
      for label, client in clients.items():
        shape = client.metadata().image_shape()
        if shape != split.image_shape:
          raise UsageError(f"--data images are {split.image_shape}, but {label!r} takes {shape}: "
                           "pass --image-size as training did")
        names = client.predict(next(split.batches())[0][:1]).class_names[0]
        if tuple(names) != split.class_names:
          raise UsageError(f"--data's class names {list(split.class_names)} are not {label!r}'s "
                           f"{list(names)}: evaluate on the data the model was trained for")
      progress = _Progress(split.size, stream)
      try:
        def predict(label, images):
          result = clients[label].predict(images)
          return result.version, result.classes
        return evaluation_lib.measure(
            predict, split.batches(),
            {served_config.CANARY: candidate, served_config.STABLE: baseline},
            split.class_names, progress)
      finally:
        progress.close()
    finally:
      for client in clients.values():
        client.close()
  return measure, described


def report(figures: evaluation_lib.Evaluation) -> str:
  lines = []
  for who in (figures.candidate, figures.baseline):
    lo, hi = who.accuracy_ci95
    lines.append(f"{who.label} (version {who.version}): accuracy {who.accuracy:.2%} "
                 f"({who.correct}/{who.total}, 95% CI {lo:.2%}-{hi:.2%}); latency per request "
                 f"p50 {who.latency_p50_ms:.1f} ms, p99 {who.latency_p99_ms:.1f} ms "
                 f"({who.requests} requests)")
    lines.append("  per class: " + ", ".join(
        f"{name} {c['accuracy']:.0%}" if c["accuracy"] is not None else f"{name} -"
        for name, c in who.per_class.items()))
  test = figures.test
  lines.append(f"paired: {figures.disagreements} of {figures.candidate.total} images classified "
               f"differently; discordant pairs: stable right only {test.baseline_only}, canary "
               f"right only {test.candidate_only}; exact McNemar p = {test.p_two_sided:.3g} "
               f"(two-sided), p(candidate worse) = {test.p_candidate_worse:.3g}")
  return "\n".join(lines)


def run(args: argparse.Namespace, out, err) -> int:
  protocol = args.protocol or ("rest" if args.server.startswith(("http://", "https://")) else "grpc")
  server = TfServing(args.server, protocol, args.request_timeout_s)
  store = served_config.ConfigFile(args.config)
  say = lambda line: print(printable(line), file=err, flush=True)  # noqa: E731
  rollout = steps.Rollout(store, server, args.model, args.timeout_s, args.poll_s, say)
  _, _, view = rollout.read()
  base_path = args.base_path or view.base_path
  records = args.records or record_lib.default_dir(base_path)
  common = dict(server=args.server, config=args.config)
  written: list[str] = []

  def keep(record: dict) -> None:
    try:
      written.append(record_lib.write(records, record))
      say(f"record: {written[-1]}")
    except Exception as e:  # pylint: disable=broad-except  # the decision stands; say it was not recorded
      say(f"warning: the record could not be written to {records}: {type(e).__name__}: {e}")
    if args.json:
      json.dump(record, out, indent=2, sort_keys=True)
      out.write("\n")

  if args.command == "rollback":
    baseline = view.labels.get(served_config.STABLE)
    to = args.to
    if to is None:
      with candidate_lib.reading(f"reading the records in {records}"):
        to = record_lib.previous_stable(records, args.model, baseline)
    try:
      left, now = steps.rollback(rollout, to)
    except RolloutError as e:
      keep(record_lib.build("rollback", args.model, "refused" if isinstance(e, Refused) else "failed",
                            candidate=to, baseline=baseline, message=str(e), **common))
      raise
    keep(record_lib.build("rollback", args.model, "rolled-back", candidate=now, baseline=left,
                          message=f"stable moved from version {left} back to {now}", **common))
    print(f"rolled back: stable {left} -> {now}", file=out)
    return EXIT_OK

  candidate = candidate_lib.resolve(args.candidate, view, base_path, args.wait_s, args.poll_s, say)
  if args.candidate == "next":
    # The wait can last hours (the rollout Job's --wait-s): stable is what
    # models.config says now, which the steps also read, not what it said then.
    _, _, view = rollout.read()
  baseline = view.labels.get(served_config.STABLE)
  labelled = {"the candidate": candidate, served_config.STABLE: baseline}
  measure, described = _measure(
      server, args.model,
      (args.data, args.dataset or args.model, args.split, args.image_size, args.batch_size), err,
      fits=lambda split: candidate_lib.check_fit(
          split, base_path, {k: v for k, v in labelled.items() if v is not None}))
  settings = dict(significance=args.significance, max_p99_ms=args.max_p99_ms, **common)

  def decided(figures, decision: Optional[decision_lib.Decision], action: str) -> None:
    outcome = ("evaluated" if decision is None else "promoted" if decision.promote else "refused")
    print(report(figures), file=out)
    keep(record_lib.build(action, args.model, outcome, candidate=candidate,
                          baseline=figures.baseline.version, data=dict(described),
                          figures=figures.to_json(),
                          rule=decision.to_json() if decision else None,
                          message="; ".join(decision.reasons) if decision else "", **settings))

  try:
    if args.command == "evaluate":
      figures, _, _ = steps.evaluate(rollout, candidate, measure)
      decided(figures, None, "evaluate")
      print(f"evaluated: canary -> version {candidate}; stable unchanged on version "
            f"{figures.baseline.version}", file=out)
      return EXIT_OK
    # The record says "promoted" once the rule allowed it; if moving stable
    # then fails, a second record says "failed".
    steps.promote(rollout, candidate, measure, args.significance, args.max_p99_ms,
                  on_decision=lambda figures, decision: decided(figures, decision, "promote"))
  except Refused:
    raise
  except (RolloutError, ClientError) as e:
    keep(record_lib.build(args.command, args.model, "failed", candidate=candidate,
                          baseline=baseline, data=dict(described) or None, message=str(e),
                          **settings))
    raise
  print(f"promoted: stable -> version {candidate}", file=out)
  return EXIT_OK


def main(argv: Optional[Sequence[str]] = None, out=None, err=None) -> int:
  """Runs the command line; returns the exit code."""
  out, err = out or sys.stdout, err or sys.stderr
  try:
    args = build_parser().parse_args(argv)
    return run(args, out, err)
  except Refused as e:
    print(f"refused: {printable(str(e))}", file=err)
    return e.exit_code
  except RolloutError as e:
    print(f"error: {printable(str(e))}", file=err)
    return e.exit_code
  except ClientError as e:  # outside a step: reading the server before anything changed
    print(f"error: {printable(str(e))}", file=err)
    return EXIT_UNAVAILABLE if e.exit_code == EXIT_UNAVAILABLE else EXIT_FAILED


def main_entry() -> None:
  sys.exit(main())


