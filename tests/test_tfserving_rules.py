"""The TF Serving stand-in enforces TF Serving's rules: one test per rule.

Each rule is a function in tests/standins/tfserving/rules.py that names its
TF Serving source. The last tests run the
0.1 config, which real TF Serving refuses, to show the stand-in refuses it too.
"""

import logging
import os
import shutil

import numpy as np
import pytest
import requests
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import prediction_log_pb2

from conftest import REPO
from standins.tfserving import ModelServer
from standins.tfserving import rules
from standins.tfserving.rules import Code
from standins.tfserving.rules import ServingError
from standins.tfserving.rules import Snapshot
from standins.tfserving.rules import State
from trainer.data import pipeline as data
from trainer import export
from trainer import models as model_lib
from trainer.data import synthetic

CIFAR = data.DatasetInfo("cifar10", (32, 32, 3), synthetic.CLASS_NAMES["cifar10"], 10, 10)


# ------------------------------------------------------------ pure rules


def test_http_status_follows_tf_servings_mapping():
  assert [rules.http_status(c) for c in (Code.INVALID_ARGUMENT, Code.FAILED_PRECONDITION,
                                         Code.OUT_OF_RANGE)] == [400, 400, 400]
  assert rules.http_status(Code.NOT_FOUND) == 404
  assert rules.http_status(Code.UNAVAILABLE) == 503 and rules.http_status(Code.DEADLINE_EXCEEDED) == 504
  assert rules.http_status(Code.CANCELLED) == 499 and rules.http_status(Code.RESOURCE_EXHAUSTED) == 429
  assert rules.http_status(Code.DATA_LOSS) == rules.http_status(Code.UNKNOWN) == 500


def test_labels_must_name_available_versions_unless_the_flag_allows_new_ones():
  config = {"m": {"stable": 1}}
  with pytest.raises(ServingError, match="Request to assign label to version 1 of model m") as e:
    rules.assign_labels(config, {}, {"m": []}, allow_unavailable=False)
  assert e.value.code == Code.FAILED_PRECONDITION
  assert rules.assign_labels(config, {}, {"m": []}, allow_unavailable=True) == config
  # Restating a label on the same, unloaded, version is allowed with the flag...
  assert rules.assign_labels(config, config, {"m": []}, allow_unavailable=True) == config
  # ... moving it to another unloaded version is not.
  with pytest.raises(ServingError, match="version 2"):
    rules.assign_labels({"m": {"stable": 2}}, config, {"m": [1]}, allow_unavailable=True)
  assert rules.assign_labels({"m": {"stable": 2}}, config, {"m": [1, 2]}, False) == {"m": {"stable": 2}}


def test_version_policies_choose_versions_from_the_directories_found():
  assert rules.wanted_versions("latest", [1, 2, 3], num_versions=2) == {2, 3}
  assert rules.wanted_versions("latest", [1, 2, 3], num_versions=0) == {3}  # max(N, 1)
  assert rules.wanted_versions("all", [1, 3]) == {1, 3}
  assert rules.wanted_versions("specific", [1, 3], specific=[1, 2]) == {1}
  assert rules.wanted_versions("latest", []) == set()


def test_version_directories_are_numeric_names_only():
  found = rules.version_directories(["1", "2", ".staging-abc", "tmp", "+3", "4/saved_model.pb"])
  assert sorted(found) == [1, 2, 3, 4]


def test_availability_preserving_order_of_loads_and_unloads():
  ready, new = State.AVAILABLE, State.NEW
  # latest 1: the new version loads before the old one unloads...
  assert rules.next_action([Snapshot(1, False, ready), Snapshot(2, True, new)]) == ("load", 2)
  assert rules.next_action([Snapshot(1, False, ready), Snapshot(2, True, ready)]) == ("unload", 1)
  # ... latest 2: the oldest unloads first.
  assert rules.next_action([Snapshot(1, False, ready), Snapshot(2, True, ready),
                            Snapshot(3, True, new)]) == ("unload", 1)
  # A failed version is not tried again while it stays wanted.
  assert rules.next_action([Snapshot(1, True, State.END)]) is None


def test_requests_resolve_labels_and_versions_with_tf_servings_errors():
  labels = {"m": {"stable": 1}}
  assert rules.resolve("m", None, None, labels, [1, 2]) == 2
  assert rules.resolve("m", None, "stable", labels, [1, 2]) == 1
  with pytest.raises(ServingError, match="Unrecognized servable version label: canary") as e:
    rules.resolve("m", None, "canary", labels, [1])
  assert e.value.code == Code.INVALID_ARGUMENT
  with pytest.raises(ServingError, match=r"Servable not found for request: Specific\(m, 1\)") as e:
    rules.resolve("m", None, "stable", labels, [2])  # the label's version was unloaded
  assert e.value.code == Code.NOT_FOUND
  with pytest.raises(ServingError, match=r"Latest\(x\)"):
    rules.resolve("x", None, None, labels, [])


def test_rest_paths_parse_as_tf_serving_parses_them():
  assert rules.parse_rest_path("POST", "/v1/models/m/labels/stable:predict") == rules.RestPath(
      "m", None, "stable", "predict")
  assert rules.parse_rest_path("GET", "/v1/models/m/versions/3/metadata").version == 3
  assert rules.parse_rest_path("POST", "/v1/models/m/versions/x:predict") is None
  assert rules.parse_rest_path("GET", "/v2/models/m") is None


def test_floats_are_written_as_tf_servings_json_writer_does():
  assert [rules.format_decimal(x) for x in (0.2, 1.0, 9e6, 3e-5)] == ["0.2", "1.0", "9e+06", "3e-05"]
  # Six digits do not round-trip this float32: max_digits10 (9) are written.
  assert rules.format_decimal(float(np.float32(0.1234567))) == "0.123456702"
  assert [rules.format_decimal(x) for x in (float("nan"), float("-inf"))] == ["NaN", "-Infinity"]


def test_duplicate_models_and_relative_base_paths_are_refused():
  with pytest.raises(ServingError, match="multiple times"):
    rules.validate_model_config_list([("m", "/a"), ("m", "/b")])
  with pytest.raises(ServingError, match="absolute path or URI"):
    rules.validate_model_config_list([("m", "models/m")])


def test_warm_up_limits():
  rules.check_warmup_count(1000, "f")
  with pytest.raises(ServingError, match=r"exceeds the maximum \(1000\)"):
    rules.check_warmup_count(1001, "f")
  with pytest.raises(ServingError) as e:
    rules.check_warmup_log_type("session_run_log")
  assert e.value.code == Code.UNIMPLEMENTED
  rules.check_warmup_log_type(None)  # an empty record runs nothing and passes


# ------------------------------------------------------- a running server


def _config(tmp_path, text: str) -> str:
  path = tmp_path / "models.config"
  path.write_text(text)
  return str(path)


def _model(name, base, policy="latest { num_versions: 2 }", labels=""):
  return (f'config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" '
          f"model_version_policy {{ {policy} }} {labels} }}")


def _publish(base: str) -> int:
  version, _ = export.export(model_lib.create_model("tutorial", CIFAR.image_shape, 10), CIFAR,
                             "tutorial", [base])
  return version


@pytest.fixture
def base(tmp_path):
  path = str(tmp_path / "models" / "cifar10")
  _publish(path)
  return path


def _server(tmp_path, models: str, *flags: str) -> ModelServer:
  config = _config(tmp_path, f"model_config_list {{ {models} }}")
  return ModelServer([f"--model_config_file={config}", "--rest_api_port=8501",
                      "--file_system_poll_wait_seconds=0", "--load_retry_interval_micros=0", *flags],
                     port_map={8500: 0, 8501: 0}).start()


def test_a_label_in_the_initial_config_fails_start_up_without_the_flag(tmp_path, base):
  server = _server(tmp_path, _model("cifar10", base, labels='version_labels { key: "stable" value: 1 }'))
  assert isinstance(server.failed, Exception) and "Request to assign label to version 1" in str(server.failed)
  assert not server.started.is_set()


def test_ports_stay_closed_until_every_model_has_a_version(tmp_path, base):
  mnist = str(tmp_path / "models" / "mnist")
  os.makedirs(mnist)
  server = _server(tmp_path, _model("cifar10", base) + _model("mnist", mnist))
  try:
    server.core.poll_filesystem()
    assert not server.started.is_set() and server.rest_port is None
    shutil.copytree(os.path.join(base, "1"), os.path.join(mnist, "1"))
    server.core.poll_filesystem()
    assert server.started.wait(30)
  finally:
    server.stop()


def test_a_version_whose_load_fails_is_retried_then_fails_start_up(tmp_path):
  broken = tmp_path / "broken"
  (broken / "1").mkdir(parents=True)
  (broken / "1" / "saved_model.pb").write_bytes(b"not a SavedModel")
  server = _server(tmp_path, _model("m", str(broken)), "--max_num_load_retries=2")
  assert server.core.configured.wait(5)
  for _ in range(100):
    if server.failed:
      break
    server.core._stop.wait(0.05)  # pylint: disable=protected-access
  assert "1 model(s) did not become available" in str(server.failed)
  assert server.core._seen["m"][1].attempts == 3  # pylint: disable=protected-access  # 1 + 2 retries


def test_a_malformed_warm_up_record_fails_the_load(tmp_path, base):
  with open(os.path.join(base, "1", rules.WARMUP_FILE), "ab") as f:
    f.write(b"\x00garbage framing")
  server = _server(tmp_path, _model("cifar10", base), "--max_num_load_retries=0")
  server.core.configured.wait(5)
  for _ in range(200):
    if server.failed:
      break
    server.core._stop.wait(0.05)  # pylint: disable=protected-access
  assert server.failed is not None, "a corrupt warm-up file must fail the version's load"


def test_warm_up_records_run_on_load(tmp_path, base):
  # The trainer's export writes them; a record that fails its request fails the load.
  log = prediction_log_pb2.PredictionLog()
  request = log.predict_log.request
  request.model_spec.signature_name = "serving_default"
  request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 5, 5, 3), np.uint8)))
  with tf.io.TFRecordWriter(os.path.join(base, "1", rules.WARMUP_FILE)) as writer:
    writer.write(log.SerializeToString())
  server = _server(tmp_path, _model("cifar10", base), "--max_num_load_retries=0")
  for _ in range(200):
    if server.failed or server.started.is_set():
      break
    server.core._stop.wait(0.05)  # pylint: disable=protected-access
  assert server.failed is not None and "shape" in str(server.failed)


def test_stale_labels_after_the_policy_unloads_their_version(tmp_path, base, caplog):
  """The 0.1 config: latest 2 with labels on 1; a third version unloads 1 behind them."""
  caplog.set_level(logging.ERROR, logger="tensorflow_model_server")
  labels = 'version_labels { key: "stable" value: 1 }'
  server = _server(tmp_path, _model("cifar10", base))  # labels added once 1 is loaded
  try:
    assert server.started.wait(30)
    config_path = server.flags.model_config_file
    with open(config_path, "w") as f:
      f.write(f"model_config_list {{ {_model('cifar10', base, labels=labels)} }}")
    server.poll_config()
    _publish(base), _publish(base)
    server.core.poll_filesystem()
    assert [v for v, state, _ in server.core.status("cifar10") if state == State.AVAILABLE] == [3, 2]
    response = requests.post(f"{server.rest_url}/v1/models/cifar10/labels/stable:predict",
                             json={"instances": [np.zeros((32, 32, 3), int).tolist()]}, timeout=30)
    assert response.status_code == 404 and "Specific(cifar10, 1)" in response.json()["error"]
    server.poll_config()  # every later reload that keeps the label is refused
    assert "failed to ReloadConfig: Request to assign label to version 1" in caplog.text
  finally:
    server.stop()


def test_rest_checks_json_before_the_model(tmp_path, base):
  server = _server(tmp_path, _model("cifar10", base))
  try:
    assert server.started.wait(30)
    url = f"{server.rest_url}/v1/models"
    assert requests.post(f"{url}/nope:predict", data="{not json", timeout=10).status_code == 400
    assert requests.post(f"{url}/nope:predict", json={"instances": [1]}, timeout=10).status_code == 404
    assert requests.post(f"{url}/cifar10:predict", json=[1], timeout=10).status_code == 400
    unknown = requests.get(f"{url}/nope", timeout=10)
    assert unknown.status_code == 404 and unknown.json() == {
        "error": "Could not find any versions of model nope"}
    ints = requests.post(f"{url}/cifar10:predict",
                         json={"instances": [np.full((32, 32, 3), 1.0).tolist()]}, timeout=10)
    assert ints.status_code == 400  # uint8 input: 1.0 is not an integer
  finally:
    server.stop()


def test_unknown_arguments_are_ignored_but_bad_values_fail(tmp_path, base):
  from standins.tfserving import flags  # pylint: disable=import-outside-toplevel
  parsed = flags.parse(["--model_base_path=/m", "--allow_version_label_for_unavailable_models"])
  assert parsed.unknown == ["--allow_version_label_for_unavailable_models"]
  assert parsed.allow_version_labels_for_unavailable_models is False
  with pytest.raises(flags.FlagError):
    flags.parse(["--model_base_path=/m", "--port=http"])


def test_reload_config_over_grpc_needs_no_credentials(tmp_path, base):
  """HandleReloadConfigRequest: anyone who reaches the gRPC port can swap the config."""
  import grpc  # pylint: disable=import-outside-toplevel
  from tensorflow_serving.apis import model_management_pb2  # pylint: disable=import-outside-toplevel
  from tensorflow_serving.apis import model_service_pb2_grpc  # pylint: disable=import-outside-toplevel
  server = _server(tmp_path, _model("cifar10", base))
  try:
    assert server.started.wait(30)
    request = model_management_pb2.ReloadConfigRequest()
    labels = 'version_labels { key: "x" value: 1 }'
    text_format.Parse(f"model_config_list {{ {_model('cifar10', base, labels=labels)} }}",
                      request.config)
    with grpc.insecure_channel(server.grpc_target) as channel:
      model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(request, timeout=30)
    assert server.core.labels() == {"cifar10": {"x": 1}}
  finally:
    server.stop()



def test_grpc_needs_a_port_or_a_socket(tmp_path):
  """server.cc BuildAndStart: --port=0 turns the TCP listener off; with no socket either, no start."""
  from standins.tfserving import flags  # pylint: disable=import-outside-toplevel
  with pytest.raises(flags.FlagError, match="At least one of server_options.grpc_port or "
                                            "server_options.grpc_socket_path must be set"):
    flags.parse(["--model_base_path=/m", "--port=0"])
  assert flags.parse(["--model_base_path=/m", "--port=0", "--grpc_socket_path=/s"]).grpc_socket_path == "/s"


def test_grpc_on_a_unix_socket_only(tmp_path, base):
  """--port=0 --grpc_socket_path: gRPC answers on the socket ("unix:" + path), not on any TCP port."""
  import grpc  # pylint: disable=import-outside-toplevel
  from tensorflow_serving.apis import get_model_status_pb2  # pylint: disable=import-outside-toplevel
  from tensorflow_serving.apis import model_service_pb2_grpc  # pylint: disable=import-outside-toplevel
  socket_path = str(tmp_path / "grpc.sock")
  server = _server(tmp_path, _model("cifar10", base), "--port=0", f"--grpc_socket_path={socket_path}")
  try:
    assert server.started.wait(30), server.failed
    assert server.grpc_port is None and server.grpc_target == f"unix:{socket_path}"
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "cifar10"
    with grpc.insecure_channel(server.grpc_target) as channel:
      status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=30)
    assert [s.version for s in status.model_version_status] == [1]
    assert requests.get(f"{server.rest_url}/v1/models/cifar10", timeout=10).status_code == 200
  finally:
    server.stop()


# ------------------------------------------- the stricter rules (issue 23)


def test_a_task_larger_than_max_batch_size_is_invalid_argument_and_a_full_queue_unavailable():
  params = rules.BatchingParameters(max_batch_size=64, max_enqueued_batches=8)
  with pytest.raises(ServingError, match="^INVALID_ARGUMENT: Task size 65 is larger than maximum "
                                         "input batch size 64$"):
    rules.check_batch_task(65, params, open_batch_size=0, enqueued_batches=1)
  assert rules.check_batch_task(32, params, open_batch_size=32, enqueued_batches=8) is False  # joins
  assert rules.check_batch_task(33, params, open_batch_size=32, enqueued_batches=7) is True  # new batch
  with pytest.raises(ServingError, match="The batch scheduling queue to which this task was "
                                         "submitted is full; currently 8 batches enqueued and "
                                         "max_enqueued_batches is 8") as full:
    rules.check_batch_task(33, params, open_batch_size=32, enqueued_batches=8)
  assert full.value.code == Code.UNAVAILABLE and rules.http_status(full.value.code) == 503
  assert rules.padded_batch_size(5, [1, 2, 4, 8]) == 8 and rules.padded_batch_size(5, []) == 5


def test_the_manifests_batching_file_parses_as_tf_serving_reads_it():
  from standins.tfserving import batching  # pylint: disable=import-outside-toplevel
  with open(os.path.join(REPO, "serving", "batching_parameters.txt"), encoding="utf-8") as f:
    params = batching.parse_batching_parameters(f.read())
  assert (params.max_batch_size, params.max_enqueued_batches, params.num_batch_threads) == (64, 8, 2)
  assert params.allowed_batch_sizes[-1] == 64 and not params.enable_large_batch_splitting
  with pytest.raises(text_format.ParseError):
    batching.parse_batching_parameters("max_batch_size: 64")  # a wrapper, not a scalar


def test_a_model_without_a_platform_is_refused():
  with pytest.raises(ServingError, match="Illegal setting neither ModelServerConfig::model_type "
                                         r"\(deprecated\) nor ModelServerConfig::model_platform, "
                                         "model name is m") as e:
    rules.model_platform("m", "")
  assert e.value.code == Code.INVALID_ARGUMENT
  assert rules.model_platform("m", "", model_type=1) == "tensorflow"
  with pytest.raises(ServingError, match="Model m requests unsupported platform onnx"):
    rules.check_platform_supported("m", "onnx")


def test_the_start_up_wait_ends_when_any_version_reaches_end():
  ready, end, loading = State.AVAILABLE, State.END, State.LOADING
  assert rules.models_settled({"m": {1: loading}}) is None
  assert rules.models_settled({"m": {1: ready}, "n": {}}) is None  # n has no version yet
  # Version 2 failed: the wait is over (failed), though version 1 might still load.
  assert rules.models_settled({"m": {2: end, 1: State.NEW}}) == {"m": (2, end)}
  assert rules.models_settled({"m": {3: loading, 2: ready, 1: end}}) == {"m": (2, ready)}


def test_load_retries_stop_when_the_version_is_no_longer_aspired():
  assert rules.keep_retrying_load(1, max_num_load_retries=5, aspired=True)
  assert not rules.keep_retrying_load(6, max_num_load_retries=5, aspired=True)
  assert not rules.keep_retrying_load(1, max_num_load_retries=5, aspired=False)


def test_only_the_first_config_polls_the_file_system_at_once():
  assert rules.reload_polls_now(first_config=True, file_system_poll_wait_seconds=30)
  assert rules.reload_polls_now(first_config=True, file_system_poll_wait_seconds=0)
  assert not rules.reload_polls_now(first_config=False, file_system_poll_wait_seconds=30)
  assert not rules.reload_polls_now(first_config=True, file_system_poll_wait_seconds=-1)


def test_unknown_signatures_are_failed_precondition_for_predict_and_invalid_argument_for_rest():
  grpc_error, rest_error = rules.predict_signature_not_found("x"), rules.rest_signature_not_found("x")
  assert (grpc_error.code, grpc_error.message) == (Code.FAILED_PRECONDITION,
                                                   'Serving signature key "x" not found.')
  assert rest_error.code == Code.INVALID_ARGUMENT and "not found in signature def" in rest_error.message


def test_only_v1_paths_and_the_metrics_page_are_served():
  assert rules.rest_route("/v1/models/m", None) == "api" and rules.rest_route("/V1/x", None) == "api"
  assert rules.rest_route("/v2/models/m", None) is None and rules.rest_route("/", None) is None
  assert rules.rest_route("/monitoring/prometheus/metrics", None) is None  # monitoring off
  assert rules.rest_route("/metrics", "/metrics") == "metrics"
  assert "404 Not Found" in rules.NOT_FOUND_PAGE


def test_model_status_reports_the_loads_own_error_code():
  assert rules.version_status(State.AVAILABLE, None) == (Code.OK, "")
  failed = ServingError(Code.NOT_FOUND, "Could not find meta graph def")
  assert rules.version_status(State.END, failed) == (Code.NOT_FOUND, "Could not find meta graph def")


def test_metric_names_are_written_as_the_prometheus_exporter_writes_them():
  assert rules.prometheus_name("/tensorflow/serving/request_count") == ":tensorflow:serving:request_count"
  assert rules.prometheus_name("/tensorflow/cc/saved_model/load_attempt_count") == \
      ":tensorflow:cc:saved_model:load_attempt_count"


def _grpc_refusal(server, images, signature_name: str = ""):
  """gRPC Predict of `images` to cifar10 (optionally under a signature), which must fail: its grpc.RpcError."""
  import grpc  # pylint: disable=import-outside-toplevel
  from serving.client import tensors  # pylint: disable=import-outside-toplevel
  from tensorflow_serving.apis import predict_pb2  # pylint: disable=import-outside-toplevel
  from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=import-outside-toplevel
  request = predict_pb2.PredictRequest()
  request.model_spec.name, request.model_spec.signature_name = "cifar10", signature_name
  request.inputs["images"].CopyFrom(tensors.to_tensor_proto(images))
  with grpc.insecure_channel(server.grpc_target) as channel:
    with pytest.raises(grpc.RpcError) as refused:
      prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
  return refused.value


def _batching_file(tmp_path, text: str) -> str:
  path = tmp_path / "batching_parameters.txt"
  path.write_text(text)
  return f"--batching_parameters_file={path}"


def test_a_batch_over_max_batch_size_is_refused_over_rest_and_grpc(tmp_path, base):
  import grpc  # pylint: disable=import-outside-toplevel
  # Warm-up off: the export's warm-up requests go up to 64 images, which this
  # server would refuse, failing the load (as TF Serving would).
  server = _server(tmp_path, _model("cifar10", base), "--enable_batching", "--enable_model_warmup=false",
                   _batching_file(tmp_path, "max_batch_size { value: 4 } allowed_batch_sizes: 2 "
                                            "allowed_batch_sizes: 4"))
  try:
    assert server.started.wait(30), server.failed
    images = np.zeros((5, 32, 32, 3), np.uint8)
    response = requests.post(f"{server.rest_url}/v1/models/cifar10:predict",
                             json={"instances": images.tolist()}, timeout=30)
    assert response.status_code == 400
    assert response.json() == {"error": "Task size 5 is larger than maximum input batch size 4"}
    refused = _grpc_refusal(server, images)
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details() == "Task size 5 is larger than maximum input batch size 4"
    # Three images pass, in a batch padded to the allowed size 4.
    ok = requests.post(f"{server.rest_url}/v1/models/cifar10:predict",
                       json={"instances": images[:3].tolist()}, timeout=30)
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 3
    assert server.core.batching.batch_sizes[-1] == 3
  finally:
    server.stop()


def test_a_full_batching_queue_answers_unavailable(tmp_path, base):
  import threading  # pylint: disable=import-outside-toplevel
  server = _server(tmp_path, _model("cifar10", base), "--enable_batching", "--enable_model_warmup=false",
                   _batching_file(tmp_path, "max_batch_size { value: 4 } num_batch_threads { value: 1 } "
                                            "max_enqueued_batches { value: 2 }"))
  release = threading.Event()
  try:
    assert server.started.wait(30), server.failed
    servable = server.core.servable("cifar10")
    run = servable._run  # pylint: disable=protected-access
    servable._run = lambda key, feeds: (release.wait(30), run(key, feeds))[1]  # pylint: disable=protected-access
    batch = {"images": np.zeros((4, 32, 32, 3), np.uint8)}
    scheduler = server.core.batching
    threads = []

    def send():
      thread = threading.Thread(target=servable.predict, args=("", batch), daemon=True)
      thread.start()
      threads.append(thread)

    send()  # taken by the one batch thread, which blocks in it
    for _ in range(200):
      if scheduler.processing == 1:
        break
      release.wait(0.01)
    send(), send()  # two full batches wait in the queue: it holds max_enqueued_batches
    queue = next(q for q in scheduler.queues if q.batches[0] or len(q.batches) > 1)
    for _ in range(200):
      if len(queue.batches) == 2 and sum(t.size for t in queue.batches[-1]) == 4:
        break
      release.wait(0.01)
    response = requests.post(f"{server.rest_url}/v1/models/cifar10:predict",
                             json={"instances": batch["images"].tolist()}, timeout=30)
    assert response.status_code == 503
    assert response.json()["error"] == ("The batch scheduling queue to which this task was submitted "
                                        "is full; currently 2 batches enqueued and "
                                        "max_enqueued_batches is 2")
  finally:
    release.set()
    for thread in threads:
      thread.join(30)
    server.stop()


def test_an_empty_model_platform_fails_start_up(tmp_path, base):
  config = _config(tmp_path, f'model_config_list {{ config {{ name: "cifar10" base_path: "{base}" }} }}')
  server = ModelServer([f"--model_config_file={config}", "--file_system_poll_wait_seconds=0"],
                       port_map={8500: 0}).start()
  for _ in range(100):
    if server.failed:
      break
    server.core._stop.wait(0.05)  # pylint: disable=protected-access
  assert "INVALID_ARGUMENT: Illegal setting neither ModelServerConfig::model_type" in str(server.failed)
  assert not server.started.is_set()


def _broken(path: str) -> None:
  os.makedirs(path)
  with open(os.path.join(path, "saved_model.pb"), "wb") as f:
    f.write(b"not a SavedModel")


def test_start_up_fails_when_the_highest_version_fails_though_a_lower_one_loads(tmp_path, base):
  _broken(os.path.join(base, "2"))  # latest 2: version 2 is loaded first, and fails
  server = _server(tmp_path, _model("cifar10", base), "--max_num_load_retries=0")
  for _ in range(400):
    if server.failed or server.started.is_set():
      break
    server.core._stop.wait(0.05)  # pylint: disable=protected-access
  assert "1 model(s) did not become available: {{name: cifar10 version: 2 due to error: INTERNAL" \
      in str(server.failed)
  server.stop()


def test_load_retries_end_when_a_newer_version_replaces_the_failing_one(tmp_path, base):
  import threading  # pylint: disable=import-outside-toplevel
  broken = str(tmp_path / "m")
  _broken(os.path.join(broken, "1"))
  server = _server(tmp_path, _model("m", broken, policy="latest { num_versions: 1 }"),
                   "--max_num_load_retries=1000000", "--load_retry_interval_micros=20000")
  try:
    seen = server.core._seen  # pylint: disable=protected-access
    for _ in range(200):
      if seen.get("m", {}).get(1) and seen["m"][1].attempts >= 2:
        break
      server.core._stop.wait(0.05)  # pylint: disable=protected-access
    assert seen["m"][1].attempts >= 2  # retrying when the newer version arrives
    shutil.copytree(os.path.join(base, "1"), os.path.join(broken, "2"))
    poll = threading.Thread(target=server.core.poll_filesystem, daemon=True)
    poll.start()
    poll.join(60)  # without the cancellation, version 1 retries for 20,000 s first
    assert not poll.is_alive()
    attempts = seen["m"][1].attempts
    assert seen["m"][1].state == State.END and attempts < 1000
    assert seen["m"][2].state == State.AVAILABLE
    server.core._stop.wait(0.2)  # pylint: disable=protected-access
    assert seen["m"][1].attempts == attempts  # no attempt after the cancellation
  finally:
    server.stop()


def test_status_reports_each_versions_error_code_over_rest_and_grpc(tmp_path, base):
  import grpc  # pylint: disable=import-outside-toplevel
  from tensorflow_serving.apis import get_model_status_pb2  # pylint: disable=import-outside-toplevel
  from tensorflow_serving.apis import model_service_pb2_grpc  # pylint: disable=import-outside-toplevel
  server = _server(tmp_path, _model("cifar10", base), "--max_num_load_retries=0")
  try:
    assert server.started.wait(30), server.failed
    _broken(os.path.join(base, "2"))
    server.core.poll_filesystem()
    status = requests.get(f"{server.rest_url}/v1/models/cifar10", timeout=10).json()
    by_version = {s["version"]: s for s in status["model_version_status"]}
    assert by_version["1"]["status"] == {"error_code": "OK", "error_message": ""}
    assert by_version["2"]["state"] == "END" and by_version["2"]["status"]["error_code"] == "INTERNAL"
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "cifar10"
    with grpc.insecure_channel(server.grpc_target) as channel:
      response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=30)
    codes = {s.version: s.status.error_code for s in response.model_version_status}
    assert codes == {2: Code.INTERNAL.value, 1: Code.OK.value}
  finally:
    server.stop()


def test_rest_paths_outside_v1_are_libevents_404_and_signatures_are_checked_per_api(tmp_path, base):
  import grpc  # pylint: disable=import-outside-toplevel
  server = _server(tmp_path, _model("cifar10", base))
  try:
    assert server.started.wait(30), server.failed
    for path in ("/statuspage", "/v2/models/cifar10", "/monitoring/prometheus/metrics"):
      response = requests.get(f"{server.rest_url}{path}", timeout=10)
      assert response.status_code == 404 and response.text == rules.NOT_FOUND_PAGE
      assert response.headers["Content-Type"].startswith("text/html")
    image = np.zeros((1, 32, 32, 3), np.uint8)
    response = requests.post(f"{server.rest_url}/v1/models/cifar10:predict",
                             json={"signature_name": "nope", "instances": image.tolist()}, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"] == 'Serving signature name: "nope" not found in signature def'
    refused = _grpc_refusal(server, image, signature_name="nope")
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.details() == 'Serving signature key "nope" not found.'
  finally:
    server.stop()


def test_the_prometheus_page_counts_real_requests(tmp_path, base):
  monitoring = os.path.join(REPO, "serving", "monitoring.config")
  server = _server(tmp_path, _model("cifar10", base), f"--monitoring_config_file={monitoring}")
  try:
    assert server.started.wait(30), server.failed
    url = f"{server.rest_url}/v1/models/cifar10:predict"
    assert requests.post(url, json={"instances": np.zeros((1, 32, 32, 3), int).tolist()},
                         timeout=30).status_code == 200
    assert requests.post(url, json={"instances": [[1]]}, timeout=30).status_code == 400
    page = requests.get(f"{server.rest_url}/monitoring/prometheus/metrics", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"] == "text/plain"
    lines = page.text.splitlines()
    assert ':tensorflow:serving:request_count{model_name="cifar10",status="OK"} 1' in lines
    assert ':tensorflow:serving:request_count{model_name="cifar10",status="INVALID_ARGUMENT"} 1' in lines
    assert ':tensorflow:serving:request_latency_count{model_name="cifar10",API="predict",entrypoint="REST"} 1' \
        in lines
    assert "# TYPE :tensorflow:serving:request_latency histogram" in lines
    assert f':tensorflow:cc:saved_model:load_attempt_count{{model_path="{base}/1",status="success"}} 1' \
        in lines
    assert requests.get(f"{server.rest_url}/metrics", timeout=10).status_code == 404
  finally:
    server.stop()
