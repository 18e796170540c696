"""Clients predict, only the operator reloads: k8s/serving.yaml's proxy, the real nginx, in front of TF Serving.

TF Serving answers ModelService.HandleReloadConfigRequest on its gRPC port to
anyone, unauthenticated (tensorflow_serving/model_servers/model_service_impl.cc).
k8s/serving.yaml therefore runs TF Serving with gRPC on a Unix socket only
and puts nginx (the `proxy` container) in front of it. Here the pod runs as
in the cluster: tests/k8s_harness.py's ServingDeployment starts the TF Serving
stand-in from the `tf-serving` container's args, and Debian's nginx, as a
non-root user, from the `proxy` container's command and the nginx.conf of its
ConfigMap, with only ports and mount paths mapped to local ones. A client is
this repository's own prediction client (serving.client), or raw gRPC and
HTTP where a client would never call such a method.
"""

import json
import os
import shutil
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from conftest import REPO
from k8s_harness import ServingDeployment
from serving.client import PredictClient
from trainer import export
from trainer import models as model_lib
from trainer.data import pipeline as data
from trainer.data import synthetic

pytestmark = pytest.mark.skipif(
    not (shutil.which("nginx") or os.access("/usr/sbin/nginx", os.X_OK)),
    reason="needs Debian's nginx (apt-get install nginx-light; .ci/install-tools installs it)")

CIFAR = data.DatasetInfo("cifar10", (32, 32, 3), synthetic.CLASS_NAMES["cifar10"], 10, 10)
BASE = "gs://BUCKET/models/cifar10"  # models.config's base path: PUBLISH_DIR/cifar10
RELOAD = "/tensorflow.serving.ModelService/HandleReloadConfigRequest"
PERMISSION_DENIED_MESSAGE = "this method is for the operator only"


@pytest.fixture(scope="module")
def pod(tmp_path_factory):
  """The serving pod with version 1 published and loaded, both containers running."""
  pod = ServingDeployment(os.path.join(REPO, "k8s", "serving.yaml"), str(tmp_path_factory.mktemp("pod")))
  try:
    export.export(model_lib.create_model("tutorial", CIFAR.image_shape, 10), CIFAR, "tutorial",
                  [pod.local(BASE)])
    server = pod.start()
    assert server.started.wait(timeout=60), server.failed
    pod.start_proxy()
    yield pod
  finally:
    pod.stop()


def _images(n=2):
  return np.zeros((n, 32, 32, 3), np.uint8)


def _reload_request(pod) -> model_management_pb2.ReloadConfigRequest:
  """A reload that would replace what serves: cifar10's labels moved to a version never published."""
  config = pod.server.core.config()
  config.model_config_list.config[0].version_labels["stable"] = 7
  return model_management_pb2.ReloadConfigRequest(config=config)


def test_tf_serving_has_no_grpc_port_of_its_own(pod):
  """Its gRPC API is on the pod's socket only: nothing outside the pod can call it without the proxy."""
  assert pod.server.flags.port == 0 and pod.server.grpc_port is None
  assert pod.server.grpc_target.startswith("unix:")
  assert {p["containerPort"] for p in pod.proxy_container["ports"]} == {8500, 8501}


def test_predictions_pass_over_grpc_and_rest(pod):
  with PredictClient.grpc(pod.proxy_target("grpc"), "cifar10", label="stable", attempts=1) as client:
    result = client.predict(_images())
    assert result.version == 1 and len(result.classes) == 2
  with PredictClient.rest(f"http://{pod.proxy_target('http')}", "cifar10", label="stable",
                          attempts=1) as client:
    # REST's predict answer names no version (TF Serving's JSON has none); metadata does.
    assert len(client.predict(_images(3)).classes) == 3
    assert client.metadata().version == 1


def test_model_status_passes_over_grpc_and_rest(pod):
  with grpc.insecure_channel(pod.proxy_target("grpc")) as channel:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "cifar10"
    response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=10)
  assert [(s.version, s.state) for s in response.model_version_status] == [
      (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]
  with urllib.request.urlopen(f"http://{pod.proxy_target('http')}/v1/models/cifar10", timeout=10) as r:
    assert json.load(r)["model_version_status"][0]["state"] == "AVAILABLE"


def test_a_clients_reload_is_refused_with_permission_denied_and_nothing_changes(pod):
  before = pod.server.core.config()
  labels = pod.server.core.labels()
  with grpc.insecure_channel(pod.proxy_target("grpc")) as channel:
    with pytest.raises(grpc.RpcError) as refused:
      model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(_reload_request(pod),
                                                                                 timeout=10)
  assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
  assert PERMISSION_DENIED_MESSAGE in refused.value.details()
  assert pod.server.core.config() == before and pod.server.core.labels() == labels
  with PredictClient.grpc(pod.proxy_target("grpc"), "cifar10", label="stable", attempts=1) as client:
    assert client.predict(_images(1)).version == 1


@pytest.mark.parametrize("method", [
    RELOAD,
    "/grpc.health.v1.Health/Check",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "/tensorflow.ProfilerService/Profile",
    # nginx would normalise these to a permitted path; TF Serving matches the
    # method name exactly as sent, so the proxy decides on that, too.
    "/tensorflow.serving.PredictionService/../ModelService/HandleReloadConfigRequest",
    "/tensorflow.serving.PredictionService/Predict/../../tensorflow.serving.ModelService/HandleReloadConfigRequest",
    "/tensorflow.serving.ModelService/HandleReloadConfigRequest/../GetModelStatus",
    "/tensorflow.serving.ModelService/GetModelStatus%2F..%2FHandleReloadConfigRequest",
])
def test_only_prediction_and_status_methods_pass(pod, method):
  before = pod.server.core.config()
  with grpc.insecure_channel(pod.proxy_target("grpc")) as channel:
    call = channel.unary_unary(method, request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as refused:
      call(_reload_request(pod), timeout=10)
  assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, refused.value
  assert pod.server.core.config() == before


@pytest.mark.parametrize("method, path, status", [
    ("POST", "/v1/models/cifar10", 403),                 # status is GET only
    ("GET", "/v1/models/cifar10:predict", 403),          # predict is POST only
    ("DELETE", "/v1/models/cifar10/versions/1", 403),
    ("GET", "/v1/models/cifar10/versions/1", 200),
    ("GET", "/v1/models/cifar10/labels/stable/metadata", 200),
    ("GET", "/monitoring/prometheus/metrics", 200),       # passes: the Prometheus page
    ("GET", "/v2/models/cifar10", 403),
    ("GET", "/", 403),
])
def test_rest_passes_only_the_client_api(pod, method, path, status):
  request = urllib.request.Request(f"http://{pod.proxy_target('http')}{path}", method=method,
                                   data=b"{}" if method == "POST" else None)
  try:
    with urllib.request.urlopen(request, timeout=10) as response:
      code, body = response.status, response.read()
  except urllib.error.HTTPError as e:
    code, body = e.code, e.read()
  if status is None:
    assert code != 403 and b"not a TF Serving client request" not in body  # the server answered
  else:
    assert code == status, body
  if code == 403:
    assert "only predict" in json.loads(body)["error"]


def test_the_operator_reloads_through_the_loopback_port(pod):
  """docs/serving.md: kubectl port-forward to the pod's 127.0.0.1:8510 passes every method."""
  config_file = pod.read_config("models.config")
  request = model_management_pb2.ReloadConfigRequest()
  text_format.Parse(config_file, request.config)
  request.config.model_config_list.config[0].version_labels["canary"] = 1
  del request.config.model_config_list.config[0].version_labels["stable"]
  try:
    with grpc.insecure_channel(pod.operator_target()) as channel:
      model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(request, timeout=30)
    assert pod.server.core.labels()["cifar10"] == {"canary": 1}
  finally:
    # models.config in the ConfigMap stays what serves: the next poll puts it back.
    pod.server.poll_config()
  expected = model_server_config_pb2.ModelServerConfig()
  text_format.Parse(config_file, expected)
  assert pod.server.core.config() == expected
  assert pod.server.core.labels()["cifar10"] == {"stable": 1, "canary": 1}


def test_the_pod_is_ready_through_the_proxy(pod):
  assert pod.probe("readiness", container="proxy") and pod.probe("liveness", container="proxy")
  assert pod.probe("readiness") and pod.probe("startup")
