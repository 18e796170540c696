"""What docs/fault-tolerance.md promises a single process.

A kill mid-epoch resumes from the last checkpoint; SIGTERM saves and exits 143,
and the rerun resumes at that step; SIGTERM after the last step finishes the
export; a checkpoint of another model is refused with exit code 2; more
--epochs train on into a new export version; a rerun after a crash between
the export and metrics.json publishes nothing twice; a kill while publishing
never leaves a partial version where TF Serving looks.

Processes are real (`python -m trainer.task`) wherever a signal's timing
matters; their stderr is read by a thread, and every wait has a timeout. A
process that must be signalled mid-epoch signals itself right after logging
the step (tests/faults.py): the point is exact, so short epochs do.
"""

import dataclasses
import glob
import json
import os
import re
import shutil
import signal
import sys
import time

import pytest

from conftest import NUM_TRAIN, latest_checkpoint
from faults import fired, signal_on_log
from trainer import errors
from trainer.training import preemption
from trainer import task
from trainer.training import loop
from trainer.training import train
from workers import Worker

BATCH = 64  # the default preset's global batch
SPE = NUM_TRAIN // BATCH  # 31 steps per epoch
# Logging every 5 global steps lets a test act early in an epoch: global step
# 35 is epoch 2's step 4, 27 steps before the epoch's checkpoint. The process
# signals itself right after this line.
EARLY_STEP = 5 - SPE % 5
EARLY_IN_EPOCH_2 = f"epoch 2/3 step {EARLY_STEP}/{SPE}"  # of a 3-epoch run


def _args(tfds_dir, job_dir, epochs=2):
  return ["--dataset", "cifar10", "--data-dir", tfds_dir, "--job-dir", job_dir, "--epochs", str(epochs),
          "--batch-size", str(BATCH), "--log-every-steps", "5", "--steps-per-execution", "5"]


def _trainer(args, env=None) -> Worker:
  return Worker("trainer", [sys.executable, "-m", "trainer.task", *args],
                {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def _scalars(log_dir, tag):
  """(step, value) of every `tag` scalar in a TensorBoard run directory."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from tensorboard.compat.proto import event_pb2  # pylint: disable=import-outside-toplevel
  points = []
  for path in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
    for record in tf.data.TFRecordDataset(path):
      event = event_pb2.Event.FromString(record.numpy())
      points += [(event.step, float(tf.make_ndarray(v.tensor)))
                 for v in event.summary.value if v.tag == tag]
  return points


def _metrics(job_dir):
  with open(os.path.join(job_dir, "metrics.json"), encoding="utf-8") as f:
    return json.load(f)


def test_sigterm_mid_epoch_saves_exits_143_and_the_rerun_resumes_at_that_step_then_a_kill_resumes_from_the_epoch_checkpoint(
    tfds_dir, tmp_path):
  """SIGTERM early in epoch 2: the run saves and exits 143, and the rerun resumes at that
  step. The rerun is then killed (SIGKILL) early in epoch 3, and the third run resumes from
  epoch 2's checkpoint and retrains the steps lost with the kill.

  One job dir for what were two runs and their reruns (a kill mid-epoch 2 from scratch; a
  SIGTERM). The kill's rule is added after the first run: only later processes read it.
  """
  job_dir = str(tmp_path / "job")
  fault = str(tmp_path / "fault")
  args = _args(tfds_dir, job_dir, epochs=3)
  run = _trainer(args, signal_on_log(fault, EARLY_IN_EPOCH_2, signal.SIGTERM))
  try:
    assert run.wait(300) == errors.EXIT_PREEMPTED, run.log[-3000:]
  finally:
    run.kill()
  assert fired(fault, EARLY_IN_EPOCH_2)
  assert "SIGTERM received: saving a checkpoint after the current training call" in run.log
  step = int(re.search(rf"stopped on SIGTERM at epoch 2, step (\d+)/{SPE}", run.log).group(1))
  assert EARLY_STEP <= step < SPE
  assert latest_checkpoint(job_dir) == f"ckpt-{SPE + step}"
  # The process exits at once (os._exit), after closing TensorBoard's writers: every loss
  # logged before the signal (every 5 steps) is on disk.
  logged = [s for s, _ in _scalars(os.path.join(job_dir, "logs", "train"), "loss")]
  assert max(logged) == (SPE + step) // 5 * 5, (logged[-3:], step)

  in_epoch_3 = "epoch 3/3 step "
  rerun = _trainer(args, signal_on_log(fault, in_epoch_3, signal.SIGKILL))
  try:
    assert rerun.wait(300) == -signal.SIGKILL, rerun.log[-3000:]
  finally:
    rerun.kill()
  assert fired(fault, in_epoch_3) and in_epoch_3 in rerun.log
  # It resumed where the SIGTERM saved: no step trained twice, none skipped.
  assert f"ckpt-{SPE + step} at epoch 2/3, step {step}/{SPE}" in rerun.log, rerun.log[-3000:]
  assert latest_checkpoint(job_dir) == f"ckpt-{2 * SPE}"  # epoch 2's; the kill came mid-epoch 3
  assert not os.path.exists(os.path.join(job_dir, "metrics.json"))

  third = _trainer(args)
  assert third.wait(300) == 0, third.log[-3000:]
  metrics = _metrics(job_dir)
  assert metrics["resumed_from"]["checkpoint"].endswith(f"ckpt-{2 * SPE}")
  assert {k: metrics["resumed_from"][k] for k in ("epoch", "step", "global_step")} == {
      "epoch": 2, "step": 0, "global_step": 2 * SPE}
  # Epochs 1 and 2 were not trained again; the steps lost with the kill were.
  assert metrics["steps_trained"] == SPE
  assert metrics["global_step"] == 3 * SPE
  assert os.listdir(os.path.join(job_dir, "export", "cifar10")) == ["1"]


def test_sigterm_watch_records_the_signal_and_restores_the_previous_handler(caplog):
  previous = signal.getsignal(signal.SIGTERM)
  with preemption.SigtermWatch() as watch:
    os.kill(os.getpid(), signal.SIGTERM)  # handled before the next bytecode: no exit
    assert watch.received
    assert "saving a checkpoint after the current training call" in caplog.text
    watch.finishing = True
    os.kill(os.getpid(), signal.SIGTERM)
    assert "finishing the final evaluation and the export first" in caplog.text
  assert signal.getsignal(signal.SIGTERM) is previous


def test_a_sigterm_in_the_last_call_of_a_cluster_says_a_peer_told_first_still_stops_it(caplog):
  """A peer's earlier SIGTERM reaches the last call through its all-reduced stop flag."""
  with preemption.SigtermWatch(peers=True) as watch:
    watch.in_last_call = True
    os.kill(os.getpid(), signal.SIGTERM)
  assert ("SIGTERM received during the last training call: finishing it, the final evaluation "
          "and the export first (unless another worker was told before the call started: then "
          "every worker saves a checkpoint and exits with code 143).") in caplog.text


@pytest.mark.parametrize("phase", ["last training call", "final evaluation", "export"])
def test_sigterm_from_the_last_training_call_on_finishes_the_export_and_exits_0(
    phase, tfds_dir, tmp_path, monkeypatch, caplog):
  """A real SIGTERM, sent to this process at the start of the phase; the CLI's exit code.

  In the last training call it comes once the call has its stop flag (the argument is
  built), as a signal landing while the call runs would.
  """
  def sigterm_first(original):
    def wrapper(*args, **kwargs):
      if phase == "export" or kwargs.get("final"):
        os.kill(os.getpid(), signal.SIGTERM)
      return original(*args, **kwargs)
    return wrapper

  def sigterm_in_the_last_call(build):
    def build_then_wrap(*args, **kwargs):
      steps = build(*args, **kwargs)
      trained = [0]
      def train_steps(iterator, n, stop_flag):
        trained[0] += int(n)
        if trained[0] == SPE:  # the run's last call (one epoch)
          os.kill(os.getpid(), signal.SIGTERM)
        return steps.train_steps(iterator, n, stop_flag)
      return dataclasses.replace(steps, train_steps=train_steps)
    return build_then_wrap

  if phase == "last training call":
    monkeypatch.setattr(loop.steps_lib, "build", sigterm_in_the_last_call(loop.steps_lib.build))
  elif phase == "export":
    monkeypatch.setattr(loop.export_lib, "export", sigterm_first(loop.export_lib.export))
  else:
    monkeypatch.setattr(loop.Loop, "evaluate_and_report",
                        sigterm_first(loop.Loop.evaluate_and_report))
  caplog.set_level("INFO")
  job_dir = str(tmp_path / "job")
  code = task.main(_args(tfds_dir, job_dir, epochs=1))
  assert code == 0
  if phase == "last training call":
    # One process: no peer's flag can stop it, so no hedge.
    assert ("SIGTERM received during the last training call: finishing it, the final evaluation "
            "and the export first.") in caplog.text
  else:
    assert "SIGTERM received after training: finishing the final evaluation and the export" in caplog.text
  assert "saving a checkpoint after the current training call" not in caplog.text
  assert "normal exit (code 0)" in caplog.text
  assert os.path.isfile(os.path.join(job_dir, "export", "cifar10", "1", "saved_model.pb"))
  assert _metrics(job_dir)["export"]["version"] == 1
  assert _metrics(job_dir)["global_step"] == SPE  # every step trained


def test_a_checkpoint_of_another_model_is_refused_with_exit_2(tfds_dir, tmp_path, capsys):
  job_dir = str(tmp_path / "job")
  small = ["--train-split", "train[:256]", "--eval-split", "test[:64]", "--epochs", "1",
           "--batch-size", "128"]
  assert task.main(["--dataset", "mnist", "--data-dir", tfds_dir, "--job-dir", job_dir, *small]) == 0
  capsys.readouterr()
  code = task.main(["--dataset", "cifar10", "--data-dir", tfds_dir, "--job-dir", job_dir, *small])
  assert code == errors.EXIT_USAGE
  last = capsys.readouterr().err.strip().splitlines()[-1]
  assert re.fullmatch(r"error: checkpoint \S+ckpt-2 does not match this model and data \(.+\): it "
                      r"was written by a different configuration\. Use a new --job-dir\.", last), last
  assert not os.path.exists(os.path.join(job_dir, "export", "cifar10"))


def _copy_job(trained_job, tmp_path):
  """A copy of the shared finished job, so a test can change it."""
  config, metrics, job_dir = trained_job
  copy = str(tmp_path / "job")
  shutil.copytree(job_dir, copy)
  return dataclasses.replace(config, job_dir=copy), metrics


def test_more_epochs_train_on_into_export_version_2(trained_job, tmp_path, caplog):
  config, before = _copy_job(trained_job, tmp_path)
  caplog.set_level("INFO")
  after = train.run(dataclasses.replace(config, epochs=config.epochs + 1))
  steps = before["global_step"] // config.epochs
  assert (after["resumed_from"]["epoch"], after["resumed_from"]["step"]) == (config.epochs, 0)
  assert after["steps_trained"] == steps
  assert after["global_step"] == before["global_step"] + steps
  assert after["export"]["version"] == 2
  assert sorted(os.listdir(os.path.join(config.job_dir, "export", "cifar10"))) == ["1", "2"]
  assert _metrics(config.job_dir)["export"]["version"] == 2


@pytest.mark.parametrize("change", ["pixel range", "batch size", "fewer epochs"])
def test_resuming_with_flags_the_checkpoint_contradicts_is_refused_with_exit_2_and_changes_nothing(
    trained_job, tmp_path, capsys, change):
  """pixel range: the weights fit whatever --pixel-range says (the range is a layer without
  weights), so the run that wrote the checkpoints is asked: its config.json. Resuming [0, 1]
  weights on [-1, 1] pixels would train on, and export, a model that sees other inputs than it
  learned. batch size: the restored step counts the old steps, so the rebuilt learning-rate
  schedule was read past its end (cosine at 0: the added epoch trained at learning rate 0).
  fewer epochs: 'all N epochs already trained' of a model trained longer."""
  config, _ = _copy_job(trained_job, tmp_path)
  assert config.pixel_range == "unit"
  before = {name: open(os.path.join(config.job_dir, name), "rb").read()
            for name in ("config.json", "metrics.json")}
  checkpoints = sorted(os.listdir(os.path.join(config.job_dir, "checkpoints")))
  flags = ["--data-dir", config.data_dir, "--job-dir", config.job_dir, "--epochs", str(config.epochs + 1),
           "--batch-size", str(config.batch_size), "--learning-rate", str(config.learning_rate),
           "--warmup-epochs", str(config.warmup_epochs), "--mixed-precision", config.mixed_precision]
  changed, words = {
      "pixel range": (["--pixel-range", "symmetric"], ["--pixel-range unit", "--pixel-range symmetric"]),
      "batch size": (["--batch-size", str(2 * config.batch_size)],
                     [f"--batch-size {config.batch_size},", f"--batch-size {2 * config.batch_size},",
                      "steps per epoch"]),
      "fewer epochs": (["--epochs", str(config.epochs - 1)],
                       [f"has {config.epochs} epochs trained", f"--epochs {config.epochs - 1}:"]),
  }[change]
  code = task.main([*flags, *changed])
  assert code == errors.EXIT_USAGE
  last = capsys.readouterr().err.strip().splitlines()[-1]
  assert all(w in last for w in words) and "--job-dir" in last, last
  assert sorted(os.listdir(os.path.join(config.job_dir, "checkpoints"))) == checkpoints
  for name, data in before.items():
    assert open(os.path.join(config.job_dir, name), "rb").read() == data
  assert sorted(os.listdir(os.path.join(config.job_dir, "export", "cifar10"))) == ["1"]


@pytest.mark.parametrize("written, pixels_checked, schedule_checked", [
    (None, False, False),                                        # no config.json: an older job dir
    ("not json", False, False),                                  # warned, resumed unchecked
    ([1, 2], False, False),                                      # JSON, but not a record
    ({"pixel_range": "symmetric", "resolved": None}, True, False),
    ({"resolved": {"steps_per_epoch": 7}}, True, True),          # no pixel_range: [0, 1]
], ids=["missing", "not-json", "not-a-dict", "resolved-null", "recorded"])
def test_what_config_json_holds_decides_what_a_resume_can_check(tmp_path, caplog, written,
                                                                 pixels_checked, schedule_checked):
  """trainer/training/resume.py reads the record the run that wrote the checkpoint left, as it
  finds it; fewer --epochs than the checkpoint has are refused whatever the record holds."""
  from trainer import presets  # pylint: disable=import-outside-toplevel
  from trainer.training import resume  # pylint: disable=import-outside-toplevel
  path = tmp_path / "config.json"
  if written is not None:
    path.write_text(written if isinstance(written, str) else json.dumps(written))
  config = presets.preset("cifar10", job_dir=str(tmp_path), epochs=4)
  trained = written.get("pixel_range", "unit") if isinstance(written, dict) else "unit"

  def check(epoch, steps=7, pixels=trained):
    resume.check("ckpt-14", epoch, dataclasses.replace(config, pixel_range=pixels), steps, str(path))

  check(2)  # as recorded, or nothing to compare with
  with pytest.raises(errors.ConfigError, match="has 5 epochs trained"):
    check(5)
  other = "symmetric" if trained == "unit" else "unit"
  if pixels_checked:
    with pytest.raises(errors.ConfigError, match=f"trained with --pixel-range {trained}"):
      check(2, pixels=other)
  else:
    check(2, pixels=other)
  if schedule_checked:
    with pytest.raises(errors.ConfigError, match="was trained at 7 steps per epoch"):
      check(2, steps=8)
  else:
    check(2, steps=8)
  assert ("resuming without checking --pixel-range" in caplog.text) == (written == "not json")


def test_fewer_epochs_than_trained_are_refused_on_every_worker(trained_job, tmp_path):
  """A non-chief worker of a rerun with fewer --epochs said 'training is complete' and exited 0
  while the chief was refused (exit 2): the plan refuses it on every worker, before any decides
  to finish alone."""
  from trainer.training import plan as plan_lib  # pylint: disable=import-outside-toplevel
  config, _ = _copy_job(trained_job, tmp_path)
  worker_1 = {"TF_CONFIG": json.dumps({"cluster": {"worker": ["localhost:1", "localhost:2"]},
                                       "task": {"type": "worker", "index": 1}})}
  fewer = dataclasses.replace(config, epochs=config.epochs - 1)
  with pytest.raises(errors.ConfigError, match=rf"has {config.epochs} epochs trained, and this run "
                                               rf"asks for --epochs {config.epochs - 1}"):
    plan_lib.make(fewer, env=worker_1)
  assert plan_lib.make(config, env=worker_1).finish_alone  # as many: complete, the chief exports


def test_rerun_after_a_crash_between_export_and_metrics_publishes_no_duplicate(
    trained_job, tmp_path, caplog):
  """The crash's leftovers: version 1 in the job dir, no metrics.json, and a publish
  directory that never got its copy. The rerun publishes version 1 there, and only there."""
  config, before = _copy_job(trained_job, tmp_path)
  os.remove(os.path.join(config.job_dir, "metrics.json"))
  publish_dir = str(tmp_path / "models")
  caplog.set_level("INFO")
  after = train.run(dataclasses.replace(config, publish_dir=publish_dir))
  assert "already holds this training state" in caplog.text
  assert after["steps_trained"] == 0
  assert after["export"]["version"] == 1
  assert after["test_accuracy"] == before["test_accuracy"]  # the same weights, evaluated again
  assert os.listdir(os.path.join(config.job_dir, "export", "cifar10")) == ["1"]
  assert os.listdir(os.path.join(publish_dir, "cifar10")) == ["1"]
  assert os.path.isfile(os.path.join(publish_dir, "cifar10", "1", "saved_model.pb"))
  assert _metrics(config.job_dir)["export"]["version"] == 1


# A publisher: trainer.storage.api.publish_version, as the export calls it (for a local
# base it copies through local's staging directory, then one rename). Importing api
# loads no TensorFlow, so each of the five publishers starts in a fraction of a second.
_PUBLISHER = """
import sys
from trainer.storage import api as storage
print("ready", file=sys.stderr, flush=True)
storage.publish_version(sys.argv[1], sys.argv[2], int(sys.argv[3]))
"""


def _complete(version_dir, src):
  return all(
      os.path.getsize(os.path.join(version_dir, rel)) == os.path.getsize(os.path.join(src, rel))
      for rel in ("saved_model.pb", os.path.join("variables", "variables.data-00000-of-00001")))


def test_a_kill_while_publishing_never_leaves_a_partial_version(tmp_path):
  """TF Serving loads any integer-named directory under the base: after a SIGKILL at
  any moment of the copy, each one there must be complete."""
  src = tmp_path / "saved_model"
  (src / "variables").mkdir(parents=True)
  (src / "saved_model.pb").write_bytes(os.urandom(1 << 20))
  # 256 MiB: a copy long enough (~0.1-0.5 s) that the early kills land inside it.
  with open(src / "variables" / "variables.data-00000-of-00001", "wb") as f:
    for _ in range(256):
      f.write(os.urandom(1 << 20))
  base = tmp_path / "export" / "m"
  try:
    for version, delay in enumerate((0.0, 0.02, 0.08, 0.3, None), start=1):
      publisher = Worker(f"publisher {version}",
                         [sys.executable, "-c", _PUBLISHER, str(src), str(base), str(version)],
                         dict(os.environ))
      try:
        publisher.wait_for("ready", timeout=120)  # imports done: the copy starts now
        if delay is None:  # the last one is left to finish
          assert publisher.wait(120) == 0, publisher.log
        else:
          time.sleep(delay)
          publisher.kill()
      finally:
        publisher.kill()
      for name in os.listdir(base):
        if name.isdigit():
          assert _complete(base / name, src), f"version {name} is visible but incomplete"
    names = os.listdir(base)
    assert "5" in names, names
    # A kill inside a copy leaves its hidden staging directory (swept once stale).
    assert any(n.startswith(".staging-") for n in names), f"no kill landed inside a copy: {names}"
  finally:
    shutil.rmtree(tmp_path, ignore_errors=True)  # ~1 GiB of copies


def _break(checkpoint_prefix: str, how: str) -> None:
  """Damages one checkpoint as a crash or a bad disk would: flipped bytes, or a missing data file."""
  data = checkpoint_prefix + ".data-00000-of-00001"
  if how == "missing":
    os.remove(data)
    return
  with open(data, "r+b") as f:
    f.seek(os.path.getsize(data) // 2)
    f.write(b"\xff" * 64)


@pytest.mark.parametrize("how", ["corrupt", "missing"])
def test_a_broken_newest_checkpoint_resumes_from_the_one_before(trained_job, tmp_path, caplog, how):
  config, before = _copy_job(trained_job, tmp_path)
  os.remove(os.path.join(config.job_dir, "metrics.json"))
  steps = before["global_step"] // config.epochs
  newest = os.path.join(config.job_dir, "checkpoints", f"ckpt-{before['global_step']}")
  _break(newest, how)
  caplog.set_level("INFO")
  after = train.run(config)
  assert re.search(rf"Checkpoint {re.escape(newest)} (is incomplete or corrupt|cannot be read)", caplog.text)
  # The last epoch again, from the checkpoint before the broken one.
  assert after["resumed_from"]["checkpoint"].endswith(f"ckpt-{before['global_step'] - steps}")
  assert (after["resumed_from"]["epoch"], after["resumed_from"]["step"]) == (config.epochs - 1, 0)
  assert after["steps_trained"] == steps
  assert after["global_step"] == before["global_step"]
  assert after["export"]["version"] == 2  # new weights: a new version, version 1 untouched


def test_every_checkpoint_broken_exits_2_saying_what_to_delete(trained_job, tmp_path, capsys):
  config, _ = _copy_job(trained_job, tmp_path)
  checkpoints = os.path.join(config.job_dir, "checkpoints")
  for index in [n for n in os.listdir(checkpoints) if n.endswith(".index")]:
    _break(os.path.join(checkpoints, index[:-len(".index")]), "corrupt")
  code = task.main(["--dataset", "cifar10", "--data-dir", config.data_dir, "--job-dir",
                    config.job_dir, "--batch-size", "128", "--epochs", str(config.epochs)])
  assert code == errors.EXIT_USAGE
  last = capsys.readouterr().err.strip().splitlines()[-1]
  assert last.startswith(f"error: every checkpoint in {checkpoints} is incomplete or corrupt (ckpt-")
  assert last.endswith(f"delete {checkpoints} to train from scratch, or use a new --job-dir.")


def test_a_checkpoint_write_out_of_retries_exits_142_not_as_a_lost_peer(
    tfds_dir, tmp_path, monkeypatch, caplog):
  """GCS's file system raises ABORTED once its retries are spent: the same class a collective
  raises for a lost peer. Only the call site tells them apart (trainer/training/checkpoints.py)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  def aborted(self, checkpoint_number=None):
    raise tf.errors.AbortedError(None, None, "All 10 retry attempts failed. The last failure: "
                                 "Unavailable: Error executing an HTTP request")

  monkeypatch.setattr(tf.train.CheckpointManager, "save", aborted)
  code = task.main(["--dataset", "cifar10", "--data-dir", tfds_dir, "--job-dir",
                    str(tmp_path / "job"), "--train-split", "train[:256]", "--eval-split", "test[:64]",
                    "--epochs", "1", "--batch-size", "128"])
  assert code == errors.EXIT_TRANSIENT
  err = caplog.text
  assert "saving the checkpoint at global step 2 to" in err and "All 10 retry attempts failed" in err


def test_a_finished_job_publishes_to_a_new_publish_dir_without_training(trained_job, tmp_path, caplog):
  config, before = _copy_job(trained_job, tmp_path)
  publish_dir = str(tmp_path / "models")
  caplog.set_level("INFO")
  after = train.run(dataclasses.replace(config, publish_dir=publish_dir))
  assert "holds no exported version: exporting" in caplog.text
  assert after["steps_trained"] == 0  # nothing trained
  assert after["export"]["version"] == 1  # the job's own version 1, published where it was missing
  assert os.listdir(os.path.join(publish_dir, "cifar10")) == ["1"]
  assert after["export"]["paths"][1] == os.path.join(publish_dir, "cifar10", "1")
  assert after["test_accuracy"] == before["test_accuracy"]


@pytest.mark.parametrize("theirs", [["1"], ["5"]])
def test_a_finished_job_publishes_past_another_trainings_versions(trained_job, tmp_path, theirs):
  """A new --publish-dir shared with other jobs: its version 1 (another training's) made the rerun
  publish nothing and record that version as its own; its version 5 alone would have put this
  model below what TF Serving serves. Now it is a new version, above theirs, in both places."""
  config, before = _copy_job(trained_job, tmp_path)
  base = tmp_path / "models" / "cifar10"
  for number in theirs:
    (base / number / "assets.extra").mkdir(parents=True)
    (base / number / "saved_model.pb").write_bytes(b"theirs")
    (base / number / "assets.extra" / "trainer_run.json").write_text('{"global_step": 7}')
  after = train.run(dataclasses.replace(config, publish_dir=str(tmp_path / "models")))
  new = int(theirs[-1]) + 1
  assert after["steps_trained"] == 0 and after["export"]["version"] == new
  assert after["export"]["paths"][1] == str(base / str(new))
  assert sorted(os.listdir(base)) == sorted(theirs + [str(new)])
  assert (base / theirs[-1] / "saved_model.pb").read_bytes() == b"theirs"  # untouched
  assert sorted(os.listdir(os.path.join(config.job_dir, "export", "cifar10"))) == sorted(
      {"1", str(new)})
  assert after["test_accuracy"] == before["test_accuracy"]


def test_a_finished_job_whose_export_is_gone_exports_again(trained_job, tmp_path, caplog):
  config, before = _copy_job(trained_job, tmp_path)
  shutil.rmtree(os.path.join(config.job_dir, "export"))
  caplog.set_level("INFO")
  after = train.run(config)
  assert "holds no exported version: exporting" in caplog.text
  assert after["steps_trained"] == 0
  assert after["global_step"] == before["global_step"]
  assert os.path.isfile(os.path.join(config.job_dir, "export", "cifar10", "1", "saved_model.pb"))
  assert _metrics(config.job_dir)["export"]["version"] == 1
