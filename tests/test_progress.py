"""Progress: a bar per epoch on a terminal, today's one-line logs everywhere else.

The terminal is a real pseudo-terminal (os.openpty) on the trainer's stderr,
as a person's shell would give it; the log case is a pipe, as under
`kubectl logs` or CI.
"""

import fcntl
import io
import logging
import os
import re
import select
import struct
import subprocess
import sys
import termios

import pytest

from conftest import REPO
from trainer import config as config_lib
from trainer.telemetry import progress

# Two epochs of the smoke preset on the shared synthetic MNIST: 200 training
# images (train[:10%]) at batch 32 = 6 steps, 2 per call, scalars every 2.
FLAGS = ["--preset", "smoke", "--dataset", "mnist", "--epochs", "2", "--batch-size", "32",
         "--steps-per-execution", "2", "--log-every-steps", "2"]
# A per-step line exactly as the loop has always logged it.
STEP_LINE = (r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO trainer\.training\.loop: epoch 1/2 step 2/6: "
             r"loss \d+\.\d{4} accuracy \d\.\d{4} lr [\d.e-]+, \d+ images/s")
SUMMARY_LINE = r"INFO trainer\.training\.loop: Epoch {}/2 done: eval loss \d+\.\d{{4}}, accuracy \d\.\d{{4}}; checkpoint"


def _screen(raw: str) -> list[str]:
  """The lines a terminal shows for `raw`: each carriage return rewrites its line from column 0."""
  lines = []
  for line in raw.replace("\r\n", "\n").split("\n"):
    shown = ""
    for part in line.split("\r"):
      shown = part + shown[len(part):]
    lines.append(shown.rstrip())
  return lines


def _run_on_terminal(args: list[str], columns: int = 120) -> tuple[int, str]:
  """Runs `python -m trainer.task ARGS` with stdout and stderr on a pseudo-terminal; returns (code, output)."""
  master, slave = os.openpty()
  # A terminal window's size, as a person's shell has one (a new pty has 0 x 0).
  fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
  proc = subprocess.Popen([sys.executable, "-m", "trainer.task", *args], cwd=REPO,
                          stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
  os.close(slave)
  chunks = []
  try:
    while True:
      try:
        chunk = os.read(master, 65536)
      except OSError:  # EIO: every holder of the slave has closed it
        break
      if not chunk:
        break
      chunks.append(chunk)
    code = proc.wait(timeout=300)
  finally:
    os.close(master)
    if proc.poll() is None:
      proc.kill()
  return code, b"".join(chunks).decode("utf-8", errors="replace")


def test_a_terminal_shows_a_bar_per_epoch_with_rate_eta_loss_and_the_epoch_summaries(
    tfds_dir, tmp_path):
  code, raw = _run_on_terminal(FLAGS + ["--data-dir", tfds_dir, "--job-dir", str(tmp_path)])
  assert code == 0, raw[-3000:]
  screen = _screen(raw)
  for epoch in (1, 2):
    bars = [line for line in screen if line.startswith(f"epoch {epoch}/2:")]
    # One finished bar stays per epoch, like a line of history.
    assert len(bars) == 1, screen
    assert re.search(r"100%\|.*\| 192/192 images \[\d\d:\d\d<00:00, [\d.]+k? images/s, "
                     r"loss=\d+\.\d{4}, accuracy=\d\.\d{4}\]$", bars[0]), bars[0]
    # The epoch's summary line comes after its bar, on a line of its own.
    summary = next(i for i, line in enumerate(screen) if re.search(SUMMARY_LINE.format(epoch), line))
    assert screen.index(bars[0]) < summary
  # The bar was redrawn in place as it went: carriage returns without new lines,
  # a time left before it was known, then an estimate.
  assert len(re.findall(r"\r(?!\n)", raw)) >= 4
  assert "<?, ? images/s]" in raw and re.search(r"<00:0\d, ", raw)
  # On a terminal the bar replaces the per-step lines; other records are unchanged.
  assert not re.search(STEP_LINE, raw)
  assert "INFO trainer.training.loop: Final evaluation on" in raw


def test_without_a_terminal_the_log_is_todays_lines_with_no_redraws(tfds_dir, tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "trainer.task", *FLAGS, "--data-dir", tfds_dir,
       "--job-dir", str(tmp_path)],
      cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  err = result.stderr
  assert "\r" not in err and "\x1b" not in err
  lines = err.splitlines()
  assert any(re.fullmatch(STEP_LINE, line) for line in lines), err
  for epoch in (1, 2):
    assert sum(bool(re.search(rf"trainer\.training\.loop: epoch {epoch}/2 step \d/6:", line))
               for line in lines) == 3
    assert any(re.search(SUMMARY_LINE.format(epoch), line) for line in lines)
  assert " images [" not in err  # no bar


def _read_available(fd: int) -> str:
  """What is written to the terminal `fd` so far (a read returns only part of it)."""
  chunks = []
  while select.select([fd], [], [], 0.2)[0]:
    chunks.append(os.read(fd, 65536))
  return b"".join(chunks).decode()


def _pty_file() -> tuple[int, io.TextIOWrapper]:
  master, slave = os.openpty()
  return master, io.TextIOWrapper(os.fdopen(slave, "wb", buffering=0), encoding="utf-8",
                                  write_through=True)


@pytest.fixture
def terminal():
  master, stream = _pty_file()
  yield master, stream
  stream.close()
  os.close(master)


@pytest.fixture
def pipe():
  read, write = os.pipe()
  stream = os.fdopen(write, "w")
  yield stream
  stream.close()
  os.close(read)


@pytest.mark.parametrize("mode, is_chief, on_terminal, bar", [
    ("auto", True, True, True),     # a person at a terminal
    ("auto", True, False, False),   # kubectl logs, CI, a file
    ("auto", False, True, False),   # other workers never draw: they would share the chief's line
    ("bar", True, False, True),     # asked for: drawn even into a pipe
    ("bar", False, True, False),
    ("log", True, True, False),     # plain lines asked for on a terminal
])
def test_mode_is_a_bar_only_for_the_chief_on_a_terminal_or_when_asked(
    mode, is_chief, on_terminal, bar, terminal, pipe):
  stream = terminal[1] if on_terminal else pipe
  assert progress.wants_bar(mode, is_chief, stream) is bar
  shown = progress.create(mode, is_chief, logging.getLogger("t"), 7, 100, 64, stream)
  assert isinstance(shown, progress.Bar) is bar


def test_the_flag_offers_exactly_the_modes_progress_knows():
  field = next(f for f in config_lib.fields() if f.name == "progress")
  assert field.default == "auto" and tuple(field.metadata["choices"]) == progress.MODES
  with pytest.raises(ValueError, match="not one of"):
    progress.wants_bar("fancy", True, io.StringIO())


def test_log_mode_writes_the_per_step_line_as_before(caplog, pipe):
  log = logging.getLogger("trainer.training")
  shown = progress.create("auto", True, log, 7, 781, 64, pipe)
  with caplog.at_level(logging.INFO, "trainer.training"), shown:
    shown.start_epoch(2, 0)
    shown.advance(20)
    shown.train_metrics(2, 100, 1.23456, 0.5678, 0.00123, 1234.4)
    shown.end_epoch()
  assert caplog.messages == [
      "epoch 3/7 step 100/781: loss 1.2346 accuracy 0.5678 lr 0.00123, 1234 images/s"]


def test_log_records_print_above_the_bar_and_the_bar_is_redrawn_below(terminal, monkeypatch):
  """On an unsized terminal too (a new pty reports 0 x 0 columns and rows)."""
  master, stream = terminal
  monkeypatch.setattr(sys, "stderr", stream)
  handler = logging.StreamHandler(sys.stderr)  # as task.py's basicConfig sets it up
  handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
  root = logging.getLogger()
  monkeypatch.setattr(root, "handlers", [handler])
  log = logging.getLogger("trainer.training")
  shown = progress.create("auto", True, log, 7, 10, 64)
  with shown:
    shown.start_epoch(0, 4)  # resumed at step 4 of 10
    shown.advance(2)
    log.warning("storage was slow; retrying")
    shown.train_metrics(0, 6, 1.5, 0.25, 0.001, 500.0)
    shown.advance(4)
    shown.end_epoch()
  log.warning("after the bars")
  assert root.handlers == [handler]  # the redirect is undone
  raw = _read_available(master)
  screen = [line for line in _screen(raw) if line]
  assert screen[0] == "WARNING storage was slow; retrying"
  assert re.fullmatch(r"epoch 1/7: 100%\|█+\| 640/640 images \[.*, loss=1\.5000, accuracy=0\.2500\]",
                      screen[1]), screen
  assert screen[2:] == ["WARNING after the bars"]
  assert "256/640 images" in raw  # started where the resumed epoch was
