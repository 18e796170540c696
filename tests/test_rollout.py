"""serving/rollout: evaluate, promote, roll back through models.config, against k8s/serving.yaml's server.

The server is the TF Serving stand-in started from k8s/serving.yaml's own
container args (tests/k8s_harness.py's ServingDeployment), with only its
timing flags shortened: both polls every 1 s instead of 30 s and 60 s, and a
failed load retried once after 0.1 s instead of 5 times a minute apart. So
nothing here is immediate: a listed version loads at the server's next
file-system poll, a label moves at its next config poll, and the tool must
wait for the server to report each step. The tool writes the very file the
server polls (the ConfigMap's models.config as mounted), and reads status and
predictions as a client through serving.client (no reload call exists).

Models: the tutorial CNN trained for a few seconds on the tests' learnable
synthetic data (tests/conftest.py), against the same CNN untrained (seeded
weights): ~10% accuracy against far better on the 500 held-out images of the
`tfds_dir` fixture, which the tool reads through trainer.data.
"""

import ast
import io
import json
import os
import re
import shutil
import threading
import time

import numpy as np
import pytest
from google.protobuf import text_format
from hypothesis import HealthCheck, given, settings, strategies as st
from tensorflow_serving.config import model_server_config_pb2

from conftest import REPO
from import_graph import assert_no_cycle, package_graph
from k8s_harness import ServingDeployment
from serving.client import MalformedResponse, VersionStatus, parse_status
from serving.rollout import candidate as candidate_lib
from serving.rollout import cli, evaluation, stats, steps
from serving.rollout.errors import (EXIT_FAILED, EXIT_OK, EXIT_REFUSED, EXIT_USAGE, Refused,
                                    RolloutError, StepFailed)
from trainer import export
from trainer import models as model_lib
from trainer.data import pipeline as data
from trainer.data import synthetic

CIFAR = data.DatasetInfo("cifar10", (32, 32, 3), synthetic.CLASS_NAMES["cifar10"], 10, 10)
BASE = "gs://BUCKET/models/cifar10"  # models.config's base path
FAST = {"--model_config_file_poll_wait_seconds": "1", "--file_system_poll_wait_seconds": "1",
        "--max_num_load_retries": "1", "--load_retry_interval_micros": "100000"}


# ------------------------------------------------------------------ layout


def test_the_package_layout_keeps_the_client_light_and_reads_no_environment():
  """serving.client never imports the rollout or trainer (REST clients install no TensorFlow);
  the rollout's modules form no cycle, are listed in its __init__, and take flags, not os.environ."""
  package = os.path.join(REPO, "serving", "rollout")
  assert_no_cycle(package_graph(package, "serving.rollout"))
  doc = ast.get_docstring(ast.parse(open(os.path.join(package, "__init__.py"), encoding="utf-8").read()))
  modules = sorted(f for f in os.listdir(package) if f.endswith(".py") and not f.startswith("__"))
  assert [m for m in modules if not re.search(rf"^\s+{m}\b", doc, re.M)] == []
  for name in modules:
    assert not re.search(r"\bos\.(environ|getenv|putenv)\b",
                         open(os.path.join(package, name), encoding="utf-8").read()), name
  client = os.path.join(REPO, "serving", "client")
  for name in os.listdir(client):
    if name.endswith(".py"):
      text = open(os.path.join(client, name), encoding="utf-8").read()
      assert not re.search(r"^\s*(from|import) (trainer|serving\.rollout)\b", text, re.M), name


# ------------------------------------------------------------------ statistics


@pytest.mark.parametrize("b, c, two_sided, worse", [
    (0, 0, 1.0, 1.0),  # no discordant pair: nothing to test
    (1, 0, 1.0, 0.5),
    (10, 2, 0.03857421875, 79 / 4096),  # R: binom.test(2, 12)$p.value = 0.03857
    (2, 10, 0.03857421875, 1 - 13 / 4096),  # P(X >= 2) = 1 - P(X <= 1)
    (5, 15, 0.04138946533203125, 1 - 6196 / 2**20),  # R: binom.test(5, 20)$p.value = 0.04139
    (15, 5, 0.04138946533203125, 21700 / 2**20),
])
def test_exact_mcnemar_p_values(b, c, two_sided, worse):
  test = stats.mcnemar(b, c)
  assert test.p_two_sided == pytest.approx(two_sided, rel=1e-12)
  assert test.p_candidate_worse == pytest.approx(worse, rel=1e-12)
  assert (test.baseline_only, test.candidate_only, test.discordant) == (b, c, b + c)


def test_exact_mcnemar_stays_exact_for_large_counts():
  # 2000 discordant pairs: sums of integers near 2**2000, exact as Fractions
  # (floats would overflow). 1060:940 agrees with the continuity-corrected
  # normal approximation, z = 59.5 / sqrt(500): 0.003896.
  assert stats.mcnemar(1000, 1000).p_two_sided == 1.0
  assert stats.mcnemar(1060, 940).p_candidate_worse == pytest.approx(0.003896, rel=5e-3)
  assert stats.mcnemar(400, 3).p_candidate_worse < 1e-100


@pytest.mark.parametrize("k, n, low, high", [
    # Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (Wilson, no correction).
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718)])
def test_wilson_interval_matches_newcombes_table(k, n, low, high):
  lo, hi = stats.wilson(k, n)
  assert (round(lo, 4), round(hi, 4)) == (low, high)


def test_wilson_interval_bounds_and_percentiles():
  assert stats.wilson(10, 10)[1] == 1.0 and stats.wilson(0, 0) == (0.0, 1.0)
  with pytest.raises(ValueError):
    stats.wilson(3, 2)
  assert stats.percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
  assert stats.percentile(list(range(1, 101)), 99) == 99
  assert stats.percentile([7.0], 99) == 7.0


# ------------------------------------------------------------------ the server


def _trained(epochs: int):
  import keras  # pylint: disable=import-outside-toplevel
  keras.utils.set_random_seed(0)
  model = model_lib.create_model("tutorial", CIFAR.image_shape, 10)
  if epochs:
    images, labels = synthetic.make_arrays(2000, CIFAR.image_shape, 10, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images, labels, batch_size=128, epochs=epochs, verbose=0)
  return model


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
  """Exported versions to publish: 'trained' (a few seconds of training) and 'untrained'."""
  root = tmp_path_factory.mktemp("exports")
  paths = {}
  for name, epochs in (("untrained", 0), ("trained", 4)):
    version, _ = export.export(_trained(epochs), CIFAR, "tutorial", [str(root / name)])
    paths[name] = str(root / name / str(version))
  return paths


class Cluster:
  """k8s/serving.yaml's pod with the given versions published; the tool's flags for it."""

  def __init__(self, tmp_path, exports, published: dict, protocol: str = "grpc"):
    self.pod = ServingDeployment(os.path.join(REPO, "k8s", "serving.yaml"), str(tmp_path))
    self.pod.set_flags(FAST)
    self.exports = exports
    self.base = self.pod.local(BASE)
    self.records = str(tmp_path / "records")
    self.protocol = protocol
    for version, name in published.items():
      self.publish(version, name)

  def start(self) -> "Cluster":
    server = self.pod.start()
    assert server.started.wait(60), server.failed
    return self

  def publish(self, version: int, name: str) -> None:
    shutil.copytree(self.exports[name], os.path.join(self.base, str(version)))

  @property
  def config_path(self) -> str:
    return self.pod.local("/etc/tf-serving/models.config")

  def config(self) -> str:
    with open(self.config_path, encoding="utf-8") as f:
      return f.read()

  def labels(self) -> dict:
    config = text_format.Parse(self.config(), model_server_config_pb2.ModelServerConfig())
    return dict(config.model_config_list.config[0].version_labels)

  def listed(self) -> list:
    config = text_format.Parse(self.config(), model_server_config_pb2.ModelServerConfig())
    return list(config.model_config_list.config[0].model_version_policy.specific.versions)

  def served(self) -> dict:
    """label -> version, as the server resolves them now."""
    return dict(self.pod.server.core.labels()["cifar10"])

  def states(self) -> dict:
    return {v: s.value for v, s, _ in self.pod.server.core.status("cifar10")}

  def target(self) -> str:
    return self.pod.server.grpc_target if self.protocol == "grpc" else self.pod.server.rest_url

  def run(self, command: str, *flags: str, tfds_dir: str = "", split: str = "test",
          timeout_s: float = 30, records: bool = True):
    """Runs `python -m serving.rollout COMMAND ...` in-process: (exit code, stdout, stderr's last line).

    Progress lines come first on stderr; an error or refusal is the last line.
    """
    argv = [command, "--model", "cifar10", "--config", self.config_path, "--server", self.target(),
            "--protocol", self.protocol, "--timeout-s", str(timeout_s), "--poll-s", "0.2",
            *(["--records", self.records] if records else []), "--base-path", self.base, *flags]
    if command != "rollback":
      argv += ["--data", tfds_dir, "--split", split]
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(argv, out=out, err=err)
    lines = err.getvalue().splitlines()
    return code, out.getvalue(), lines[-1] if lines else ""

  def records_written(self) -> list:
    if not os.path.isdir(self.records):
      return []
    found = []
    for name in sorted(os.listdir(self.records)):
      with open(os.path.join(self.records, name), encoding="utf-8") as f:
        found.append(json.load(f))
    return found

  def wait(self, predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while not predicate():
      assert time.monotonic() < deadline, "the server did not get there"
      time.sleep(0.1)

  def stop(self):
    self.pod.stop()


@pytest.fixture
def cluster(tmp_path, exports):
  made = []

  def make(published, protocol="grpc"):
    made.append(Cluster(tmp_path, exports, published, protocol).start())
    return made[-1]

  yield make
  for c in made:
    c.stop()


def test_a_better_candidate_is_promoted_and_can_be_rolled_back(cluster, tfds_dir):
  c = cluster({1: "untrained"})
  c.publish(2, "trained")
  assert c.states() == {1: "AVAILABLE"}  # published, not listed: serves nothing yet

  code, out, err = c.run("promote", "--candidate", "2", tfds_dir=tfds_dir)
  assert code == EXIT_OK, err
  assert c.labels() == {"stable": 2, "canary": 2} and c.listed() == [1, 2]
  assert c.served() == {"stable": 2, "canary": 2}
  assert "promoted: stable -> version 2" in out and "exact McNemar" in out
  (record,) = c.records_written()
  figures = record["figures"]
  assert (record["action"], record["decision"], record["candidate"], record["baseline"]) == (
      "promote", "promoted", 2, 1)
  assert figures["images"] == 500 and figures["candidate"]["total"] == 500
  assert figures["candidate"]["accuracy"] > 0.5 > figures["baseline"]["accuracy"]
  assert record["test"]["p_candidate_worse"] > 0.99 and record["test"]["p_two_sided"] < 1e-6
  lo, hi = figures["candidate"]["accuracy_ci95_wilson"]
  assert 0.5 < lo <= figures["candidate"]["accuracy"] <= hi <= 1.0
  assert sum(c["total"] for c in figures["candidate"]["per_class"].values()) == 500
  # 500 images in requests of at most 64: 8 per label.
  assert figures["candidate"]["requests"] == figures["baseline"]["requests"] == 8
  assert record["data"]["split"] == "test" and record["tool"].startswith("cnn-trainer")
  assert err == "'stable' answers with version 2"  # the tool waited until the server said so

  # Version 1 is still loaded: rollback finds it in the record and moves stable back.
  code, out, err = c.run("rollback")
  assert code == EXIT_OK, err
  assert c.labels() == {"stable": 1, "canary": 2} and c.served()["stable"] == 1
  assert c.records_written()[-1]["decision"] == "rolled-back"


def test_rollback_reads_only_its_own_models_records(cluster, tfds_dir):
  """Model tiny-cifar10's record file name ends as cifar10's do ('-cifar10-v2-promoted.json'):
  it was read as cifar10's, and rollback went to its baseline."""
  c = cluster({1: "untrained"})
  c.publish(2, "trained")
  code, _, err = c.run("promote", "--candidate", "2", tfds_dir=tfds_dir)
  assert code == EXIT_OK, err
  other = {**c.records_written()[0], "model": "tiny-cifar10", "baseline": 3}
  with open(os.path.join(c.records, "99991231T235959Z-tiny-cifar10-v2-promoted.json"), "w",
            encoding="utf-8") as f:
    json.dump(other, f)  # the newest record, another model's

  code, out, err = c.run("rollback")
  assert code == EXIT_OK, err
  assert c.labels()["stable"] == 1 and c.served()["stable"] == 1
  assert "rolled back: stable 2 -> 1" in out


def test_a_worse_candidate_is_refused_and_nothing_served_changes(cluster, tfds_dir):
  """Over REST, on 200 of the 500 images (REST's JSON pixels are slow to parse in the stand-in)."""
  c = cluster({1: "trained"}, protocol="rest")
  c.publish(2, "untrained")
  before = c.config()

  code, out, err = c.run("promote", "--candidate", "2", tfds_dir=tfds_dir, split="test[:40%]")
  assert code == EXIT_REFUSED, err
  assert err.startswith("refused: the candidate is worse: candidate v2 ")
  assert "exact McNemar p(candidate worse) = " in err and "stays on version 1" in err
  # models.config is back byte for byte: candidate unlisted, canary back on stable.
  assert c.config() == before
  # The tool waited until canary was back and the candidate unloaded, not only written so.
  assert c.served() == {"stable": 1, "canary": 1} and c.states().get(2) == "END"
  (record,) = c.records_written()
  assert (record["decision"], record["candidate"], record["baseline"]) == ("refused", 2, 1)
  assert record["figures"]["images"] == 200 and record["data"]["split"] == "test[:40%]"
  assert record["test"]["p_candidate_worse"] < 1e-6
  assert record["rule"]["promote"] is False and "worse" in record["rule"]["reasons"][0]


def test_a_tie_is_promoted_as_the_rule_says(cluster, tfds_dir):
  """The same weights published again: every pair concordant, p = 1, promoted (not shown worse).

  As the Job in overlays/rollout runs it: started with training, `--candidate
  next` waits until the trainer publishes a version above the listed ones.
  """
  c = cluster({1: "trained"})
  publisher = threading.Timer(1.0, c.publish, (2, "trained"))
  publisher.start()
  code, out, err = c.run("promote", "--candidate", "next", "--wait-s", "60", tfds_dir=tfds_dir,
                         records=False)
  publisher.join()
  assert code == EXIT_OK, err
  # By default the record goes beside the versions, where TF Serving never loads it.
  c.records = os.path.join(c.base, "evaluations")
  (record,) = c.records_written()
  assert c.states() == {2: "AVAILABLE", 1: "AVAILABLE"}
  assert record["figures"]["disagreements"] == 0
  assert record["test"]["p_two_sided"] == record["test"]["p_candidate_worse"] == 1.0
  assert "a tie within noise: promoted" in record["message"]
  assert c.served()["stable"] == 2


def test_evaluate_points_canary_only_and_a_slow_candidate_is_refused(cluster, tfds_dir):
  c = cluster({1: "untrained"})
  c.publish(2, "trained")
  code, out, err = c.run("evaluate", "--candidate", "2", tfds_dir=tfds_dir)
  assert code == EXIT_OK, err
  assert c.labels() == {"stable": 1, "canary": 2} and c.served() == {"stable": 1, "canary": 2}
  assert c.records_written()[0]["decision"] == "evaluated"
  # Better, but no request is answered in 0.001 ms.
  code, out, err = c.run("promote", "--candidate", "2", "--max-p99-ms", "0.001", tfds_dir=tfds_dir)
  assert code == EXIT_REFUSED
  assert "too slow: p99 " in err and "--max-p99-ms 0.001" in err
  assert c.served()["stable"] == 1


def test_a_refused_promote_after_an_evaluate_withdraws_the_candidate(cluster, tfds_dir):
  """After `evaluate`, models.config already lists the candidate with canary on it; a refused
  `promote` of it still unlists it and puts canary back on stable (it put back that state, as
  'before', and said the candidate was withdrawn)."""
  c = cluster({1: "trained"})
  c.publish(2, "untrained")
  code, _, err = c.run("evaluate", "--candidate", "2", tfds_dir=tfds_dir)
  assert code == EXIT_OK, err
  assert c.labels() == {"stable": 1, "canary": 2} and c.listed() == [1, 2]

  code, _, err = c.run("promote", "--candidate", "2", tfds_dir=tfds_dir)
  assert code == EXIT_REFUSED, err
  assert c.labels() == {"stable": 1, "canary": 1} and c.listed() == [1]
  assert "version 2 withdrawn" in err and "'canary' back on version 1" in err
  assert c.served() == {"stable": 1, "canary": 1}  # the tool waited until canary answered
  assert [r["decision"] for r in c.records_written()] == ["evaluated", "refused"]


def test_a_candidate_that_fails_to_load_ends_cleanly(cluster, tfds_dir):
  c = cluster({1: "trained"})
  os.makedirs(os.path.join(c.base, "2"))
  with open(os.path.join(c.base, "2", "saved_model.pb"), "wb") as f:
    f.write(b"not a SavedModel")
  before = c.config()
  code, out, err = c.run("promote", "--candidate", "2", tfds_dir=tfds_dir)
  assert code == EXIT_FAILED
  assert err.startswith("error: version 2 of cifar10 failed to load: ")
  assert "'stable' untouched on version 1" in err
  assert c.config() == before and c.served() == {"stable": 1, "canary": 1}
  assert c.records_written()[-1]["decision"] == "failed"
  # Fixed and tried again: the server still reports the failed load (END, its error) until its
  # next models.config poll, which the rerun waits out instead of failing with the old error.
  assert c.states()[2] == "END"
  shutil.rmtree(os.path.join(c.base, "2"))
  c.publish(2, "trained")
  time.sleep(3)  # a fix takes longer than a few polls (FAST: 1 s): the server sees 2 unlisted
  assert c.states()[2] == "END"  # still its last state, with the old error
  code, out, err = c.run("promote", "--candidate", "2", tfds_dir=tfds_dir)
  assert code == EXIT_OK, err
  assert c.served() == {"stable": 2, "canary": 2}


def test_a_candidate_unloaded_mid_evaluation_ends_cleanly(cluster, tfds_dir, monkeypatch):
  c = cluster({1: "trained"})
  c.publish(2, "untrained")
  before = c.config()
  measure = evaluation.measure

  def unloading(predict, batches, expected, class_names, progress=lambda n: None, **kwargs):
    """After the first batch, version 2's directory is deleted; the server's poll unloads it."""
    done = []

    def and_unload(n):
      progress(n)
      if not done:
        done.append(n)
        shutil.rmtree(os.path.join(c.base, "2"))
        c.wait(lambda: c.states().get(2) == "END")
    return measure(predict, batches, expected, class_names, and_unload, **kwargs)

  monkeypatch.setattr(evaluation, "measure", unloading)
  code, out, err = c.run("promote", "--candidate", "2", tfds_dir=tfds_dir)
  assert code == EXIT_FAILED, err
  assert "stopped being served during the evaluation" in err and "NOT_FOUND" in err
  assert c.config() == before
  c.wait(lambda: c.served() == {"stable": 1, "canary": 1})


def test_an_evaluation_ended_by_anything_puts_models_config_back(cluster, tfds_dir, monkeypatch):
  """Ctrl-C, or an image that fails at full decode (trainer.errors.DataError), mid-measurement:
  models.config is put back and canary is back on stable before the run ends (it ended with the
  candidate listed and canary on it). The data's error is a usage error, exit 2."""
  from trainer.errors import DataError  # pylint: disable=import-outside-toplevel
  c = cluster({1: "trained"})
  c.publish(2, "trained")
  before = c.config()
  measure = evaluation.measure

  def failing(error):
    def after_the_first_batch(predict, batches, expected, class_names, progress=lambda n: None,
                              **kwargs):
      def and_fail(n):
        progress(n)
        raise error
      return measure(predict, batches, expected, class_names, and_fail, **kwargs)
    return after_the_first_batch

  monkeypatch.setattr(evaluation, "measure", failing(KeyboardInterrupt()))
  with pytest.raises(KeyboardInterrupt):
    c.run("promote", "--candidate", "2", tfds_dir=tfds_dir)
  assert c.config() == before and c.served() == {"stable": 1, "canary": 1}
  assert c.states().get(2) == "END"  # unloaded before the tool returned: the next run lists it afresh

  monkeypatch.setattr(evaluation, "measure", failing(DataError("test/3.png cannot be decoded")))
  code, _, err = c.run("evaluate", "--candidate", "2", tfds_dir=tfds_dir)
  assert code == EXIT_USAGE and err.startswith("error: ") and "test/3.png" in err, err
  assert c.config() == before and c.served() == {"stable": 1, "canary": 1}
  assert [r["decision"] for r in c.records_written()] == ["failed"]


def test_a_failed_move_of_stable_puts_back_the_file_from_before_the_run(cluster, tfds_dir,
                                                                        monkeypatch):
  """Promoted, stable's move written and served, then the step fails: models.config is put back
  as it was before promote (only stable's line was, leaving the candidate listed with canary on
  it), and the tool waits until stable answers with the baseline again."""
  c = cluster({1: "untrained"})
  c.publish(2, "trained")
  before = c.config()
  point, failed = steps.Rollout.point, []

  def failing_once_stable_moved(self, label, version):
    point(self, label, version)
    if label == "stable" and not failed:
      failed.append(version)
      raise StepFailed("injected: the move of 'stable' failed after its write")

  monkeypatch.setattr(steps.Rollout, "point", failing_once_stable_moved)
  code, _, err = c.run("promote", "--candidate", "2", tfds_dir=tfds_dir)
  assert code == EXIT_FAILED and failed == [2], err
  assert c.config() == before and c.served() == {"stable": 1, "canary": 1}
  assert err.startswith("error: injected") and "put back as it was before the run" in err
  assert sorted(r["decision"] for r in c.records_written()) == ["failed", "promoted"]


def test_rollback_refuses_a_version_that_is_not_loaded_and_usage_errors_exit_2(cluster, tfds_dir):
  c = cluster({1: "trained"}, protocol="rest")
  before = c.config()
  code, _, err = c.run("rollback")
  assert code == EXIT_REFUSED and "no earlier 'stable' version is recorded" in err
  code, _, err = c.run("rollback", "--to", "5")
  assert code == EXIT_REFUSED and "cannot roll 'stable' back to version 5" in err
  code, _, err = c.run("promote", "--candidate", "1", tfds_dir=tfds_dir)
  assert code == EXIT_USAGE and "already 'stable'" in err
  code, _, err = c.run("promote", "--candidate", "2", "--batch-size", "65", tfds_dir=tfds_dir)
  assert code == EXIT_USAGE and "--batch-size" in err
  # time.sleep(inf) raised OverflowError, a traceback, at the first wait.
  code, _, err = c.run("rollback", "--poll-s", "inf")
  assert code == EXIT_USAGE and "--poll-s: inf must be a finite number of seconds" in err
  assert c.config() == before


def test_storage_errors_before_any_step_are_one_line_and_change_nothing(cluster, tfds_dir,
                                                                         monkeypatch):
  """Listing the base path, reading a version's files or the records failed with a traceback
  (exit 1). Now one `error:` line: 4 for what a rerun may get past (GCS unreachable), 2 for what
  it cannot (a permission, a malformed file); and nothing was changed, which it says."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from trainer import errors as trainer_errors  # pylint: disable=import-outside-toplevel
  from trainer.storage import api  # pylint: disable=import-outside-toplevel
  c = cluster({1: "trained"})
  c.publish(2, "trained")
  before, served = c.config(), c.served()
  for name, error, exit_code, words in (
      ("list_versions", trainer_errors.TransientError("gcs down"), EXIT_FAILED, "gcs down"),
      ("list_versions", trainer_errors.StorageError("storage.objects.list denied"), EXIT_USAGE,
       "storage.objects.list denied"),
      ("exists", tf.errors.PermissionDeniedError(None, None, "no read access"), EXIT_USAGE,
       "no read access"),
      ("exists", tf.errors.UnavailableError(None, None, "connection reset"), EXIT_FAILED,
       "connection reset"),
      ("read_json", json.JSONDecodeError("Expecting value", "{", 1), EXIT_USAGE,
       "Expecting value")):
    def failing(*args, error=error):
      raise error
    with monkeypatch.context() as patched:
      patched.setattr(api, name, failing)
      code, _, err = c.run("promote", "--candidate", "latest", tfds_dir=tfds_dir)
    assert code == exit_code and err.startswith("error: ") and words in err, (name, error, err)
    assert "nothing was changed" in err
  os.makedirs(c.records)
  with open(os.path.join(c.records, "20260101T000000Z-cifar10-v1-promoted.json"), "w",
            encoding="utf-8") as f:
    f.write("{")
  code, _, err = c.run("rollback")
  assert code == EXIT_USAGE and err.startswith("error: ") and "-cifar10-v1-promoted.json" in err
  assert c.config() == before and c.served() == served
  assert os.listdir(c.records) == ["20260101T000000Z-cifar10-v1-promoted.json"]  # none written


def test_waiting_for_the_next_version_rides_out_a_listing_that_fails(monkeypatch):
  """--candidate next waits for hours in the rollout Job (backoffLimit 0): a listing that fails in
  a way a rerun may get past is said once and retried, and fails the run only at --wait-s."""
  view = type("View", (), {"versions": (1,), "labels": {"stable": 1, "canary": 1}})()
  answers = [StepFailed("listing failed (gcs down)")] * 3 + [[1], [1, 2]]

  def published(base_path):
    answer = answers.pop(0)
    if isinstance(answer, Exception):
      raise answer
    return answer

  monkeypatch.setattr(candidate_lib, "published", published)
  said = []
  assert candidate_lib.resolve("next", view, "gs://b/m", 60, 0.01, said.append) == 2
  assert said[1:] == ["listing failed (gcs down); still waiting", "listing gs://b/m works again"]
  answers[:] = [StepFailed("listing failed (gcs down)")] * 1000
  with pytest.raises(StepFailed, match=r"gcs down"):
    candidate_lib.resolve("next", view, "gs://b/m", 0.05, 0.01, said.append)


def _publish_recording(c: "Cluster", version: int, **recorded) -> None:
  """Publishes the trained export as `version`, its assets.extra/ run info changed to `recorded`."""
  c.publish(version, "trained")
  _record(c, version, **recorded)


def _record(c: "Cluster", version: int, **recorded) -> None:
  """Changes what published `version`'s export says it was trained on (trainer.export's run info)."""
  path = os.path.join(c.base, str(version), "assets.extra", "trainer_run.json")
  with open(path, encoding="utf-8") as f:
    info = json.load(f)
  with open(path, "w", encoding="utf-8") as f:
    json.dump({**info, **recorded}, f)


def test_bad_input_exits_2_before_models_config_or_the_server_is_touched(cluster, tfds_dir, tmp_path):
  """The data are loaded, and the candidate's and stable's files checked, before any step: data
  that do not load, a candidate that is not published, and data that a version's own export says
  it was not trained on (they were found once canary had moved to the candidate, or, for an
  unpublished version, once it was listed)."""
  c = cluster({1: "trained"}, protocol="rest")
  c.publish(2, "trained")
  _publish_recording(c, 3, class_names=list(reversed(CIFAR.class_names)))
  _publish_recording(c, 4, image_shape=[24, 24, 3])
  before, served = c.config(), c.served()
  for candidate, data_dir, split, message in (
      (2, tfds_dir, "validation", "--data .*: --eval-split 'validation' is not a split of 'cifar10'"),
      (2, str(tmp_path / "nothing"), "test", "does not hold dataset 'cifar10'"),
      (5, tfds_dir, "test", r"--candidate 5: version 5 is not published under .* \(no "
                            r"5/saved_model.pb; complete versions: 1, 2, 3, 4\)"),
      (3, tfds_dir, "test", r"--data's class names \['airplane', .*\] are not version 3's \(the "
                            r"candidate\) \['truck', .*\]: evaluate on the data"),
      (4, tfds_dir, "test", r"--data images are \(32, 32, 3\), but version 4 \(the candidate\) "
                            r"was trained on \(24, 24, 3\): pass --image-size")):
    code, _, err = c.run("promote", "--candidate", str(candidate), tfds_dir=data_dir, split=split)
    assert code == EXIT_USAGE and re.search(message, err), (candidate, code, err)
  assert c.config() == before and c.served() == served  # canary never moved
  assert c.records_written() == []  # nothing was tried, so nothing to record


def test_data_that_stables_export_was_not_trained_on_exit_2_before_any_step(cluster, tfds_dir):
  """Stable's own export is read too: its figures would be compared on data it does not classify."""
  c = cluster({1: "trained"})
  _record(c, 1, class_names=["cat", "dog"])  # stable, already loaded: the server does not reread it
  c.publish(2, "trained")
  before, served = c.config(), c.served()
  code, _, err = c.run("evaluate", "--candidate", "2", tfds_dir=tfds_dir)
  assert code == EXIT_USAGE and "are not version 1's (stable) ['cat', 'dog']" in err, err
  assert c.config() == before and c.served() == served and c.records_written() == []


def _relabel(c: "Cluster", versions: list, labels: dict) -> str:
  """Writes models.config by hand, as an operator would: `versions` listed, `labels` set."""
  config = text_format.Parse(c.config(), model_server_config_pb2.ModelServerConfig())
  model = config.model_config_list.config[0]
  del model.model_version_policy.specific.versions[:]
  model.model_version_policy.specific.versions.extend(versions)
  model.version_labels.clear()
  model.version_labels.update(labels)
  text = text_format.MessageToString(config)
  with open(c.config_path + ".new", "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(c.config_path + ".new", c.config_path)  # whole, as the server and the tool read it
  return text


def test_next_checks_the_stable_that_models_config_names_once_the_candidate_is_there(
    cluster, tfds_dir, monkeypatch):
  """--candidate next waits for hours in the rollout Job; if stable moves meanwhile (here by hand,
  to version 2, whose export says it classifies other classes), what the run checks is the new
  stable, not the one read when the wait began (it checked version 1, and went on)."""
  c = cluster({1: "trained"})
  c.publish(2, "trained")
  _record(c, 2, class_names=["cat", "dog"])
  _relabel(c, [1, 2], {"stable": 1})  # both listed: next is a version above 2
  c.wait(lambda: c.states().get(2) == "AVAILABLE")  # so a label may name it
  moved, listing = [], candidate_lib.published

  def published_after_the_operator(base_path):
    """The wait's first listing: the operator has moved stable and the trainer published 3."""
    if not moved:
      moved.append(_relabel(c, [1, 2], {"stable": 2}))
      c.publish(3, "trained")
    return listing(base_path)

  monkeypatch.setattr(candidate_lib, "published", published_after_the_operator)
  code, _, err = c.run("promote", "--candidate", "next", "--wait-s", "60", tfds_dir=tfds_dir)
  assert code == EXIT_USAGE and "are not version 2's (stable) ['cat', 'dog']" in err, err
  assert c.config() == moved[0] and c.records_written() == []  # nothing was tried


def test_a_folders_held_out_split_slices_as_trainings_do(image_folder):
  """--split selects from an image folder as trainer.task's --eval-split does (it had to be test)."""
  from serving.rollout import data as data_lib  # pylint: disable=import-outside-toplevel
  split = data_lib.load(f"folder:{image_folder}", "ignored", "test[:50%]", None, 32)
  assert split.size == 100 and split.description["images"] == 100


@pytest.mark.parametrize("version", ["", None])
def test_a_status_whose_version_is_empty_or_null_is_a_malformed_response(version):
  """It became a VersionStatus of version None, which sorting newest first could not compare
  (a TypeError traceback); an absent version is proto3's 0 and still parses."""
  body = {"model_version_status": [{"version": "2", "state": "AVAILABLE"},
                                   {"version": version, "state": "AVAILABLE"}]}
  with pytest.raises(MalformedResponse, match="model_version_status.version"):
    parse_status(body)
  with pytest.raises(MalformedResponse, match="model_version_status.version"):
    parse_status({"model_version_status": [{"version": version, "state": "END"}]})
  assert parse_status({"model_version_status": [{"state": "END"}, {"version": "2"}]}) == [
      VersionStatus(2, "UNKNOWN"), VersionStatus(0, "END")]


def test_waiting_on_a_server_that_cannot_be_reached_says_so_once_per_outage():
  """A wrong --server was a silent wait of --timeout-s (300 s by default)."""
  from serving.client import ServerUnavailable  # pylint: disable=import-outside-toplevel
  from serving.rollout.server import wait_for  # pylint: disable=import-outside-toplevel
  answers = iter(["down", "down", None, "down", "up"])
  said, now = [], [0.0]

  def check():
    answer = next(answers)
    if answer == "down":
      raise ServerUnavailable("connection refused", "UNAVAILABLE")
    return answer

  def sleep(seconds):
    now[0] += seconds

  assert wait_for(check, "version 2 AVAILABLE", 60, 1, lambda: now[0], sleep, said.append) == "up"
  assert len(said) == 2  # the first outage, and the second after an answer
  assert said[0].startswith("the server cannot be reached (connection refused")
  assert "waiting for version 2 AVAILABLE, up to --timeout-s 60 s" in said[0]


# ------------------------------------------------- the property: never a worse stable


class FakeStore:
  """models.config in memory; a write may fail (before anything is written: the write is atomic)."""

  def __init__(self, text, faults):
    self.text, self.faults, self.history = text, faults, [text]

  def describe(self):
    return "models.config"

  def read(self):
    return self.text

  def write(self, text):
    if self.faults.draw("write_fails"):
      raise StepFailed("writing models.config failed (injected)")
    self.text = text
    self.history.append(text)


class FakeServer:
  """TF Serving at the config/status boundary: it applies models.config only when it polls.

  It follows the rules of tests/standins/tfserving/rules.py that the steps
  depend on, through the same functions: a label moves only to an AVAILABLE
  version (else the whole file is refused), listed versions load at a later
  poll, unlisted ones unload; a restart forgets everything and comes back
  from the file. Faults: restarts, unreachable reads, polls that never come
  (so the tool times out), loads that fail.
  """

  def __init__(self, store, faults, loadable):
    from standins.tfserving import rules  # pylint: disable=import-outside-toplevel
    self.rules, self.store, self.faults, self.loadable = rules, store, faults, loadable
    self.loaded, self.failed, self.labels = set(), set(), {}
    self.stable_history = []
    self.restart()

  def describe(self):
    return "fake"

  def restart(self):
    view = steps.served_config.view(steps.served_config.parse(self.store.text), "cifar10")
    self.loaded = {v for v in view.versions if v in self.loadable}
    self.labels = dict(view.labels)  # at start-up unavailable labels are allowed (the flag)
    self.stable_history.append(self.labels.get("stable"))

  def poll(self):
    if self.faults.draw("restart"):
      self.restart()
    if self.faults.draw("stalled"):
      return
    view = steps.served_config.view(steps.served_config.parse(self.store.text), "cifar10")
    try:
      self.labels = self.rules.assign_labels({"m": view.labels}, {"m": self.labels},
                                             {"m": self.loaded}, True)["m"]
    except self.rules.ServingError:
      pass  # refused: the old labels stay
    self.stable_history.append(self.labels.get("stable"))
    self.loaded &= set(view.versions)
    for v in set(view.versions) - self.loaded - self.failed:
      (self.loaded if v in self.loadable and not self.faults.draw("load_fails") else self.failed).add(v)

  def _reachable(self):
    from serving.client import ServerUnavailable  # pylint: disable=import-outside-toplevel
    if self.faults.draw("unreachable"):
      raise ServerUnavailable("injected", "UNAVAILABLE")

  def states(self, model):
    self._reachable()
    found = {v: VersionStatus(v, "AVAILABLE") for v in self.loaded}
    found.update({v: VersionStatus(v, "END", "injected load failure") for v in self.failed})
    return found

  def label_version(self, model, label):
    self._reachable()
    version = self.labels.get(label)
    return version if version in self.loaded else None


class Faults:
  def __init__(self, data, rates):
    self.data, self.rates = data, rates

  def draw(self, kind):
    rate = self.rates.get(kind, 0)
    return bool(rate) and self.data.draw(st.integers(0, 99), label=kind) < rate


def _figures(candidate_right: int, baseline_right: int, n: int = 200) -> evaluation.Evaluation:
  labels = np.zeros(n, np.int64)
  cand = np.where(np.arange(n) < candidate_right, 0, 1)
  base = np.where(np.arange(n) < baseline_right, 0, 1)
  names = [f"c{k}" for k in range(2)]
  return evaluation.compare(
      evaluation.label_figures("canary", 2, labels, cand, names, [1.0]),
      evaluation.label_figures("stable", 1, labels, base, names, [1.0]), labels, cand, base)


INITIAL = """# models.config
model_config_list { config { name: "cifar10" base_path: "/m" model_platform: "tensorflow"
  model_version_policy { specific { versions: 1 } }
  version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 1 } } }
"""


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), candidate_right=st.integers(0, 200),
       rates=st.fixed_dictionaries({k: st.sampled_from([0, 5, 20, 50]) for k in
                                    ("write_fails", "restart", "stalled", "unreachable",
                                     "load_fails", "measure_fails")}))
def test_a_worse_model_never_becomes_stable_whatever_fails(data, candidate_right, rates):
  """Property: through any faults, `stable` never names a candidate the test shows worse.

  A fake server and an in-memory models.config at the boundary the real
  tests above exercise through k8s/serving.yaml's server (steps.Rollout's
  ConfigStore and Server), so thousands of fault schedules run in seconds:
  server restarts, failed config writes, polls that never come (timeouts),
  unreachable reads, failed loads, a measurement that fails. Time is the
  fake's: each sleep is one server poll. The baseline gets 150 of 200 right.
  """
  outcome, worse, stables, server, message = _promote_through_faults(Faults(data, rates),
                                                                      candidate_right)
  if worse:
    assert outcome in ("refused", "failed")
    assert 2 not in stables and 2 not in server.stable_history
  if outcome != "promoted":
    # stable back on the baseline, or never moved; unless a promoted candidate's
    # move was not reported AND putting the file back failed too, which the
    # message says.
    assert stables[-1] == 1 or "putting models.config back also failed" in message
  if not any(rates.values()):  # without faults the rule decides, and is obeyed
    assert outcome == ("refused" if worse else "promoted")


@pytest.mark.parametrize("candidate_right, outcome", [(100, "refused"), (140, "refused"),
                                                      (150, "promoted"), (190, "promoted")])
def test_without_faults_the_fake_follows_the_rule(candidate_right, outcome):
  """The property's fake, fault-free: the rule is obeyed both ways, so the property is not vacuous."""
  result, worse, stables, server, _ = _promote_through_faults(Faults(None, {}), candidate_right)
  assert (result, worse) == (outcome, outcome == "refused")
  assert server.labels["stable"] == stables[-1] == (1 if worse else 2)


def test_promote_interrupted_between_its_decision_and_acting_on_it_puts_models_config_back():
  """Ctrl-C while the decision is recorded (on_decision): canary was left on the candidate."""
  store, server, rollout = _fake_rollout(Faults(None, {}))

  def interrupted(figures, decision):
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    steps.promote(rollout, 2, lambda candidate, baseline: _figures(190, 150), 0.05, None,
                  on_decision=interrupted)
  assert store.text == INITIAL and server.labels == {"stable": 1, "canary": 1}


def _fake_rollout(faults):
  """(store, server, Rollout) over the fakes, on a fake clock whose every sleep is a server poll."""
  store = FakeStore(INITIAL, faults)
  server = FakeServer(store, faults, loadable={1, 2})
  clock = [0.0]

  def sleep(seconds):
    clock[0] += seconds
    server.poll()

  rollout = steps.Rollout(store, server, "cifar10", timeout_s=5, poll_s=1, clock=lambda: clock[0],
                          sleep=sleep)
  return store, server, rollout


def _promote_through_faults(faults, candidate_right):
  store, server, rollout = _fake_rollout(faults)
  figures = _figures(candidate_right, 150)
  worse = figures.test.p_candidate_worse < 0.05

  def measure(candidate, baseline):
    if faults.draw("measure_fails"):
      from serving.client import RequestRejected  # pylint: disable=import-outside-toplevel
      raise RequestRejected("injected", "NOT_FOUND", "gone")
    return figures

  message = ""
  try:
    steps.promote(rollout, 2, measure, 0.05, None)
    outcome = "promoted"
  except Refused as e:
    outcome, message = "refused", str(e)
  except RolloutError as e:
    outcome, message = "failed", str(e)
  for _ in range(3):  # the server catches up with the file
    server.poll()
  stables = [steps.served_config.view(steps.served_config.parse(t), "cifar10").labels["stable"]
             for t in store.history]
  return outcome, worse, stables, server, message
