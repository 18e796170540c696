"""TensorBoard beyond scalars: the HParams tab compares job dirs, the Profile tab shows a trace.

Two short runs under one log directory, as `tensorboard --logdir runs/` would
see two job dirs, read back through a real TensorBoard's HTTP API with the
requests its frontend sends.
"""

import dataclasses
import json
import os

import pytest
import requests

import tensorboard_server
from conftest import make_config
from trainer import presets
from trainer import errors
from trainer.telemetry import hparams
from trainer.training import train
from trainer.telemetry.profiling import ProfileWindow

# --profile-steps of the plain run. With --steps-per-execution 5 and
# --log-every-steps 5 the loop would call 5 steps at a time (global steps 0,
# 5, 10, 15); the window cuts the calls at 2 and 7, and the logging at 5.
PROFILE_STEPS = "3,7"
# Every status, as the frontend asks: sessions with no end record are UNKNOWN.
STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


@pytest.fixture(scope="module")
def runs(tfds_dir, tmp_path_factory):
  """Job dirs runs/cifar10 (profiled) and runs/cifar10-best (resumed for a second epoch).

  Returns (runs dir, {name: config}, {name: metrics.json}).
  """
  root = tmp_path_factory.mktemp("runs")
  plain = make_config(tfds_dir, str(root / "cifar10"), epochs=1, profile_steps=PROFILE_STEPS)
  best = make_config(tfds_dir, str(root / "cifar10-best"), epochs=1, augment=True,
                     learning_rate=1e-3, warmup_epochs=0.5, label_smoothing=0.1,
                     weight_decay=0.05, pixel_range="symmetric")
  train.run(best)
  best = dataclasses.replace(best, epochs=2)  # a rerun resumes it for one more epoch
  metrics = {"cifar10-best": train.run(best), "cifar10": train.run(plain)}
  return str(root), {"cifar10": plain, "cifar10-best": best}, metrics


@pytest.fixture(scope="module")
def tensorboard(runs):
  def sessions_and_trace_listed(url):
    tags = requests.get(f"{url}/data/plugin/scalars/tags", timeout=5).json()
    return ({f"{name}/logs/{run}" for name in ("cifar10", "cifar10-best") for run in ("train", "eval")}
            <= set(tags) and requests.get(f"{url}/data/plugin/profile/runs", timeout=5).json())

  with tensorboard_server.serve(runs[0], sessions_and_trace_listed) as url:
    yield url


def _post(tensorboard, route, body):
  response = requests.post(f"{tensorboard}/data/plugin/hparams/{route}", json=body, timeout=30)
  assert response.status_code == 200, response.text
  return response.json()


def _experiment(tensorboard):
  return _post(tensorboard, "experiment", {"experimentName": "", "includeMetrics": True})


def test_experiment_lists_the_hparams_and_the_metrics_the_run_writes(tensorboard):
  experiment = _experiment(tensorboard)
  names = [info["name"] for info in experiment["hparamInfos"]]
  assert sorted(names) == sorted([*hparams.CONFIG_HPARAMS, *hparams.RESOLVED])
  schedule = next(info for info in experiment["hparamInfos"] if info["name"] == "lr_schedule")
  assert schedule["domainDiscrete"] == ["constant", "cosine", "step"]
  metrics = {(info["name"]["group"], info["name"]["tag"]) for info in experiment["metricInfos"]}
  assert metrics == {("eval", "accuracy"), ("eval", "loss"), ("train", "accuracy"),
                     ("train", "loss"), ("train", "images_per_sec")}


def _session_groups(tensorboard):
  """{job dir name: session group}, asked for as the HParams table asks."""
  experiment = _experiment(tensorboard)
  col_params = ([{"hparam": info["name"], "includeInResult": True}
                 for info in experiment["hparamInfos"]]
                + [{"metric": info["name"], "includeInResult": True}
                   for info in experiment["metricInfos"]])
  response = _post(tensorboard, "session_groups", {
      "experimentName": "", "allowedStatuses": STATUSES, "colParams": col_params,
      "startIndex": 0, "sliceSize": 100, "includeMetrics": True})
  return {os.path.basename(group["name"]): group for group in response["sessionGroups"]}


def _recorded(root, name):
  with open(os.path.join(root, name, "config.json")) as f:
    return json.load(f)


def _metric(group, run, tag):
  return next(value["value"] for value in group["metricValues"]
              if value["name"] == {"group": run, "tag": tag})


def _last_scalar(tensorboard, run, tag):
  points = requests.get(f"{tensorboard}/data/plugin/scalars/scalars",
                        params={"run": run, "tag": tag}, timeout=10).json()
  return points[-1][2]  # [wall_time, step, value]


def test_one_session_per_job_dir_with_its_config_and_final_metrics(tensorboard, runs):
  root, configs, metrics = runs
  groups = _session_groups(tensorboard)
  # The resumed job is still one session, with the values of its last attempt.
  assert sorted(groups) == ["cifar10", "cifar10-best"]
  for name, group in groups.items():
    config = configs[name]
    assert group["name"] == os.path.join(root, name)  # the trial id: the job dir
    assert [session["name"] for session in group["sessions"]] == [f"{name}/logs"]
    assert group["hparams"] == {
        "dataset": "cifar10", "model": config.model, "optimizer": config.optimizer,
        "momentum": config.momentum, "epochs": config.epochs,
        "batch_size": 128, "learning_rate": config.learning_rate,
        "lr_schedule": config.lr_schedule, "warmup_epochs": config.warmup_epochs,
        "label_smoothing": config.label_smoothing, "weight_decay": config.weight_decay,
        "augment": config.augment, "pixel_range": config.pixel_range,
        "mixed_precision": config.mixed_precision,
        "effective_learning_rate": pytest.approx(config.effective_learning_rate()),
        # auto resolved for this machine, as config.json records it
        "compute_precision": _recorded(root, name)["resolved"]["compute_precision"],
        "xla": False, "workers": metrics[name]["workers"], "replicas": metrics[name]["replicas"]}
    assert _metric(group, "eval", "accuracy") == pytest.approx(metrics[name]["test_accuracy"])
    assert _metric(group, "eval", "loss") == pytest.approx(metrics[name]["test_loss"])
    for tag in ("loss", "accuracy", "images_per_sec"):
      assert _metric(group, "train", tag) == pytest.approx(
          _last_scalar(tensorboard, f"{name}/logs/train", tag))
  assert groups["cifar10-best"]["hparams"]["epochs"] == 2
  assert groups["cifar10"]["hparams"]["augment"] is False
  assert (groups["cifar10"]["hparams"]["pixel_range"], groups["cifar10-best"]["hparams"]["pixel_range"]) \
      == ("unit", "symmetric")
  # The session's own folder holds one events file: the resume replaced the first one.
  logs = os.path.join(root, "cifar10-best", "logs")
  assert len([f for f in os.listdir(logs) if f.startswith("events.out.tfevents")]) == 1


def _profile_data(tensorboard, run, tool):
  hosts = requests.get(f"{tensorboard}/data/plugin/profile/hosts",
                       params={"run": run, "tag": tool}, timeout=60).json()
  assert len(hosts) == 1, hosts  # the chief's host only
  response = requests.get(f"{tensorboard}/data/plugin/profile/data", timeout=120, params={
      "run": run, "tag": tool, "host": hosts[0]["hostname"]})
  assert response.status_code == 200, response.text[:500]
  return response.json()


def test_profile_tab_shows_the_trace_of_the_profiled_run_only(tensorboard):
  profiles = requests.get(f"{tensorboard}/data/plugin/profile/runs", timeout=30).json()
  assert len(profiles) == 1 and profiles[0].startswith("cifar10/logs/train/"), profiles
  tools = requests.get(f"{tensorboard}/data/plugin/profile/run_tools",
                       params={"run": profiles[0]}, timeout=60).json()
  assert {"overview_page", "input_pipeline_analyzer", "trace_viewer@"} <= set(tools), tools
  events = _profile_data(tensorboard, profiles[0], "trace_viewer@")["traceEvents"]
  # One marked profiler step per call in the window: global steps 3-5 and 6-7.
  assert [event["name"] for event in events if event.get("name") == "train"] == ["train"] * 2
  assert any(event.get("name") == "train_steps" for event in events)
  # The input pipeline's stages, for telling input-bound from compute-bound.
  overview = _profile_data(tensorboard, profiles[0], "overview_page")
  assert overview[0]["p"]["host_tf_op_percent"]
  stages = _profile_data(tensorboard, profiles[0], "input_pipeline_analyzer")
  assert any(str(row["c"][0]["v"]).startswith("Iterator::Root::Prefetch")
             for table in stages for row in table.get("rows", [])), stages


@pytest.mark.parametrize("value", ["7", "7,", "a,b", "0,5", "8,7", "1,2,3", "-3,4"])
def test_profile_steps_must_be_two_step_numbers_in_order(value, tmp_path):
  config = presets.preset("smoke", job_dir=str(tmp_path), profile_steps=value)
  with pytest.raises(errors.ConfigError, match=r"--profile-steps .*START,END.*1 <= START <= END"):
    config.validate()


def test_profile_steps_of_one_step_is_valid(tmp_path):
  assert presets.preset("smoke", profile_steps="5,5").profile_window() == (5, 5)
  assert presets.preset("smoke").profile_window() is None


class _Recorder(ProfileWindow):
  """A ProfileWindow that records when it would start and stop instead of tracing."""

  def __init__(self, window, is_chief=True):
    super().__init__(window, "unused", is_chief)
    self.events = []

  def _start(self, first, last):
    self.events.append(("start", first, last))
    self.tracing = True

  def _stop(self, save):
    self.events.append(("stop", save))
    self.tracing, self.done = False, True


def _calls(window, steps, per_call, global_step=0, is_chief=True):
  """Drives the window as train.py's loop does; returns (steps per call, events)."""
  recorder, calls = _Recorder(window, is_chief), []
  with recorder:
    while global_step < steps:
      n = recorder.before_call(global_step, min(per_call, steps - global_step))
      recorder.events.append(("call", global_step, n))
      calls.append(n)
      global_step += n
      recorder.after_call(global_step)
  return calls, recorder.events


def test_window_cuts_the_calls_so_the_trace_holds_exactly_its_steps():
  calls, events = _calls((3, 7), steps=15, per_call=5)
  assert calls == [2, 5, 5, 3]
  assert events == [("call", 0, 2), ("start", 3, 7), ("call", 2, 5), ("stop", True),
                    ("call", 7, 5), ("call", 12, 3)]


def test_window_of_one_step_and_from_the_first_step():
  assert _calls((4, 4), steps=10, per_call=5)[1] == [
      ("call", 0, 3), ("start", 4, 4), ("call", 3, 1), ("stop", True), ("call", 4, 5),
      ("call", 9, 1)]
  assert _calls((1, 3), steps=6, per_call=5)[1][:3] == [
      ("start", 1, 3), ("call", 0, 3), ("stop", True)]


def test_window_past_the_end_stops_and_saves_when_training_ends():
  calls, events = _calls((8, 100), steps=10, per_call=5)
  assert calls == [5, 2, 3] and events[-1] == ("stop", True)


def test_resume_inside_the_window_traces_the_rest_and_after_it_nothing():
  assert _calls((3, 7), steps=10, per_call=5, global_step=4)[1][:2] == [
      ("start", 5, 7), ("call", 4, 3)]
  assert _calls((3, 7), steps=20, per_call=5, global_step=10)[0] == [5, 5]
  assert _calls((3, 7), steps=20, per_call=5, global_step=10)[1][0] == ("call", 10, 5)


def test_only_the_chief_traces_but_every_worker_cuts_its_calls_alike():
  """Each call is a collective: a worker whose calls differed from the chief's would hang."""
  calls, events = _calls((3, 7), steps=15, per_call=5, is_chief=False)
  assert calls == _calls((3, 7), steps=15, per_call=5)[0] == [2, 5, 5, 3]
  assert all(event[0] == "call" for event in events)


def test_a_failed_run_stops_the_trace_without_writing_it():
  recorder = _Recorder((1, 10))
  with pytest.raises(RuntimeError), recorder:
    recorder.before_call(0, 5)
    raise RuntimeError("preempted")
  assert recorder.events == [("start", 1, 10), ("stop", False)]
