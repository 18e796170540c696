"""serving/*.config parse as the protos TF Serving reads, and k8s/serving.yaml serves them."""

import ast
import os
import re

import pytest
import yaml
from packaging.requirements import InvalidRequirement
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory
from google.protobuf import text_format
from google.protobuf import wrappers_pb2
from tensorflow_serving.config import model_server_config_pb2

from conftest import REPO
from schemas import validate

CONFIG_FILES = ("models.config", "batching_parameters.txt", "monitoring.config")


def _read(*parts):
  with open(os.path.join(REPO, *parts), encoding="utf-8") as f:
    return f.read()


def _tf_serving_messages():
  """(BatchingParameters, MonitoringConfig) message classes with TF Serving's schema.

  tensorflow-serving-api 2.21 ships ModelServerConfig but not these two. Their
  fields are transcribed from tensorflow/serving's
  tensorflow_serving/servables/tensorflow/session_bundle_config.proto
  (message BatchingParameters, fields 1-7) and
  tensorflow_serving/config/monitoring_config.proto, with the same names,
  numbers and types, so text_format rejects a misspelt or mistyped field as
  the model server's parser would.
  """
  F = descriptor_pb2.FieldDescriptorProto
  pool = descriptor_pool.DescriptorPool()
  pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
  proto = descriptor_pb2.FileDescriptorProto(
      name="tensorflow_serving/transcribed_configs.proto", package="tensorflow.serving",
      syntax="proto3", dependency=["google/protobuf/wrappers.proto"])

  def message(name, fields):
    m = proto.message_type.add(name=name)
    for number, (field, kind, type_name, label) in enumerate(fields, start=1):
      m.field.add(name=field, number=number, type=kind, label=label,
                  **({"type_name": type_name} if type_name else {}))

  opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
  int64_value = ".google.protobuf.Int64Value"
  message("BatchingParameters", [
      ("max_batch_size", F.TYPE_MESSAGE, int64_value, opt),
      ("batch_timeout_micros", F.TYPE_MESSAGE, int64_value, opt),
      ("max_enqueued_batches", F.TYPE_MESSAGE, int64_value, opt),
      ("num_batch_threads", F.TYPE_MESSAGE, int64_value, opt),
      ("thread_pool_name", F.TYPE_MESSAGE, ".google.protobuf.StringValue", opt),
      ("allowed_batch_sizes", F.TYPE_INT64, None, rep),
      ("pad_variable_length_inputs", F.TYPE_BOOL, None, opt),
  ])
  message("PrometheusConfig", [("enable", F.TYPE_BOOL, None, opt),
                               ("path", F.TYPE_STRING, None, opt)])
  message("MonitoringConfig", [
      ("prometheus_config", F.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig", opt)])
  pool.Add(proto)
  return tuple(message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{n}"))
               for n in ("BatchingParameters", "MonitoringConfig"))


BatchingParameters, MonitoringConfig = _tf_serving_messages()


@pytest.fixture(scope="module")
def manifests():
  """{kind: object} of k8s/serving.yaml; "ConfigMap" is TF Serving's, "ProxyConfigMap" the proxy's."""
  docs = [d for d in yaml.safe_load_all(_read("k8s", "serving.yaml")) if d]
  by_kind = {d["kind"]: d for d in docs if d["kind"] != "ConfigMap"}
  config_maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
  assert set(config_maps) == {"tf-serving-config", "tf-serving-proxy"}
  return {**by_kind, "ConfigMap": config_maps["tf-serving-config"],
          "ProxyConfigMap": config_maps["tf-serving-proxy"]}


def _container(manifests, name="tf-serving"):
  (container,) = [c for c in manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
                  if c["name"] == name]
  return container


def _flags(manifests):
  return dict(a[2:].split("=", 1) if "=" in a else (a[2:], None) for a in _container(manifests)["args"])


def _published_models():
  """{model name: base path} for every model the training manifests publish.

  k8s/job.yaml and k8s/tfjob.yaml train `--preset=NAME` and publish it to
  PUBLISH_DIR/NAME (trainer.export publishes to <publish dir>/<model name>).
  """
  job = [d for d in yaml.safe_load_all(_read("k8s", "job.yaml")) if d]
  (settings,) = [d["data"] for d in job if d["kind"] == "ConfigMap"]
  published = {}
  for manifest in ("job.yaml", "tfjob.yaml"):
    for arg in re.findall(r"--preset=(\w+)", _read("k8s", manifest)):
      published[arg] = f"{settings['PUBLISH_DIR']}/{arg}"
  return published


def test_models_config_serves_exactly_what_the_training_manifests_publish():
  # TF Serving opens no port until every listed model has a version loaded
  # (model_servers/server.cc BuildAndStart, after ServerCore::Create waits in
  # core/load_servables_fast.cc): a model nobody publishes keeps it down.
  config = text_format.Parse(_read("serving", "models.config"),
                             model_server_config_pb2.ModelServerConfig())
  models = {m.name: m for m in config.model_config_list.config}
  assert {name: m.base_path for name, m in models.items()} == _published_models()


def test_models_config_pins_versions_and_labels_only_listed_ones():
  config = text_format.Parse(_read("serving", "models.config"),
                             model_server_config_pb2.ModelServerConfig())
  for m in config.model_config_list.config:
    assert m.model_platform == "tensorflow"
    # `specific`: the config, not the bucket, decides what serves.
    assert m.model_version_policy.WhichOneof("policy_choice") == "specific"
    listed = set(m.model_version_policy.specific.versions)
    labels = dict(m.version_labels)
    assert set(labels) == {"stable", "canary"}
    assert set(labels.values()) <= listed, "a label on a version that is not listed answers NOT_FOUND"


def test_batching_parameters_are_consistent():
  params = text_format.Parse(_read("serving", "batching_parameters.txt"), BatchingParameters())
  for field in ("max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches"):
    assert params.HasField(field), field  # every value set deliberately, none left to defaults
  sizes = list(params.allowed_batch_sizes)
  # TF Serving's own requirements: increasing, and the last equals max_batch_size.
  assert sizes == sorted(set(sizes)) and sizes[-1] == params.max_batch_size.value
  assert params.batch_timeout_micros.value <= 5000  # low latency: a lone request waits <= 5 ms
  assert params.max_enqueued_batches.value >= 1
  assert params.pad_variable_length_inputs is False
  # The client's default request size fits one batch.
  from serving import client
  assert client.DEFAULT_BATCH_SIZE <= params.max_batch_size.value


def test_exports_warm_every_allowed_batch_size():
  """Each padded batch size costs a one-off start-up the first time it runs, so the
  export's warm-up requests cover exactly the sizes batching pads to."""
  from trainer import export
  params = text_format.Parse(_read("serving", "batching_parameters.txt"), BatchingParameters())
  assert export.WARMUP_BATCH_SIZES == tuple(params.allowed_batch_sizes)


def test_batching_threads_match_the_cpus_requested(manifests):
  params = text_format.Parse(_read("serving", "batching_parameters.txt"), BatchingParameters())
  resources = _container(manifests)["resources"]
  assert int(resources["requests"]["cpu"]) == params.num_batch_threads.value
  flags = _flags(manifests)
  assert int(flags["tensorflow_intra_op_parallelism"]) == params.num_batch_threads.value


def test_the_transcribed_schema_rejects_malformed_values():
  # The schema bites: a wrapper field needs `{ value: N }`, and a typo is unknown.
  with pytest.raises(text_format.ParseError):
    text_format.Parse("max_batch_size: 64", BatchingParameters())
  with pytest.raises(text_format.ParseError):
    text_format.Parse("max_batch_sise { value: 64 }", BatchingParameters())


def test_monitoring_config_enables_prometheus(manifests):
  config = text_format.Parse(_read("serving", "monitoring.config"), MonitoringConfig())
  assert config.prometheus_config.enable is True
  assert config.prometheus_config.path == "/monitoring/prometheus/metrics"
  annotations = manifests["Deployment"]["spec"]["template"]["metadata"]["annotations"]
  assert annotations["prometheus.io/path"] == config.prometheus_config.path
  assert annotations["prometheus.io/port"] == "8501"


def test_configmap_holds_exactly_the_files_in_serving(manifests):
  data = manifests["ConfigMap"]["data"]
  assert sorted(data) == sorted(CONFIG_FILES)
  for name in CONFIG_FILES:
    assert data[name] == _read("serving", name), f"k8s/serving.yaml's copy of {name} differs"


def test_deployment_reads_the_mounted_files(manifests):
  spec = manifests["Deployment"]["spec"]["template"]["spec"]
  container = _container(manifests)
  flags = _flags(manifests)
  (mount,) = [m for m in container["volumeMounts"] if m["name"] == "config"]
  (volume,) = [v for v in spec["volumes"] if v["name"] == "config"]
  assert volume["configMap"]["name"] == manifests["ConfigMap"]["metadata"]["name"]
  assert "subPath" not in mount  # a subPath mount never sees ConfigMap updates
  for flag, name in (("model_config_file", "models.config"),
                     ("batching_parameters_file", "batching_parameters.txt"),
                     ("monitoring_config_file", "monitoring.config")):
    assert flags[flag] == f"{mount['mountPath']}/{name}"
  assert "enable_batching" in flags and flags["model_config_file_poll_wait_seconds"] == "60"
  # models.config labels version 1 before it is published (see its comments).
  assert "allow_version_labels_for_unavailable_models" in flags
  # gRPC only on the pod's socket (tests/test_serving_proxy.py); REST on a port the proxy forwards to.
  assert flags["port"] == "0" and flags["grpc_socket_path"].startswith("/run/tf-serving/")
  assert flags["rest_api_port"] == "8502"
  ports = {p["name"]: p["containerPort"] for p in container["ports"]}
  assert ports == {"model-http": 8502}
  proxy = _container(manifests, "proxy")
  assert {p["name"]: p["containerPort"] for p in proxy["ports"]} == {"grpc": 8500, "http": 8501}
  nginx_conf = manifests["ProxyConfigMap"]["data"]["nginx.conf"]
  assert f"server unix:{flags['grpc_socket_path']};" in nginx_conf
  assert nginx_conf.count("proxy_pass http://127.0.0.1:8502;") == 3
  # The Service reaches the proxy's ports, never TF Serving's own.
  service_ports = {p["name"]: (p["port"], p["targetPort"]) for p in manifests["Service"]["spec"]["ports"]}
  assert service_ports == {"grpc": (8500, "grpc"), "http": (8501, "http")}
  pod_labels = manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]
  assert manifests["Service"]["spec"]["selector"].items() <= pod_labels.items()
  # Ready when the version `stable` names serves: its metadata, by label, from
  # TF Serving directly and through the proxy.
  stable = {f"/v1/models/{name}/labels/stable/metadata" for name in _published_models()}
  assert container["readinessProbe"]["httpGet"]["port"] == "model-http"
  assert container["readinessProbe"]["httpGet"]["path"] in stable
  assert proxy["readinessProbe"]["httpGet"]["port"] == "http"
  assert proxy["readinessProbe"]["httpGet"]["path"] in stable
  assert container["livenessProbe"]["tcpSocket"]["port"] == "model-http"


def _declared_specifier(package):
  """The version specifier setup.py declares for `package`, the same wherever it is listed."""
  specifiers = set()
  for node in ast.walk(ast.parse(_read("setup.py"))):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
      try:
        requirement = Requirement(node.value)
      except InvalidRequirement:
        continue  # a string that is not a requirement
      if canonicalize_name(requirement.name) == canonicalize_name(package):
        specifiers.add(str(requirement.specifier))
  assert len(specifiers) == 1, f"setup.py declares {package} as {sorted(specifiers)}"
  return SpecifierSet(specifiers.pop())


def test_image_matches_the_serving_api_and_runs_restricted(manifests):
  container = _container(manifests)
  # The model server speaks the protos of tensorflow-serving-api, which the
  # client uses: its release must be one setup.py allows, pinned in full so
  # a pod restart cannot pull another one.
  repository, tag = container["image"].rsplit(":", 1)
  assert repository == "tensorflow/serving"
  assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"{container['image']} is not a pinned x.y.z release"
  declared = _declared_specifier("tensorflow-serving-api")
  assert Version(tag) in declared, f"{container['image']} is outside setup.py's tensorflow-serving-api{declared}"
  spec = manifests["Deployment"]["spec"]["template"]["spec"]
  # Its own read-only identity, not the trainer's (tests/test_least_privilege.py).
  assert spec["serviceAccountName"] == manifests["ServiceAccount"]["metadata"]["name"] == "tf-serving"
  assert spec["automountServiceAccountToken"] is False
  pod, ctr = spec["securityContext"], container["securityContext"]
  assert pod["runAsNonRoot"] is True and isinstance(pod["runAsUser"], int) and pod["runAsUser"] > 0
  assert pod["seccompProfile"]["type"] == "RuntimeDefault"
  assert ctr["allowPrivilegeEscalation"] is False and ctr["capabilities"]["drop"] == ["ALL"]
  assert ctr["readOnlyRootFilesystem"] is True
  assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])
  for kind in ("requests", "limits"):
    assert {"cpu", "memory"} <= set(container["resources"][kind])


def test_manifest_passes_strict_schema_validation():
  proc = validate("k8s/serving.yaml", cwd=REPO, timeout=120)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  for kind in ("configmap/tf-serving-config", "configmap/tf-serving-proxy", "deployment/tf-serving", "service/tf-serving",
               "serviceaccount/tf-serving", "networkpolicy/tf-serving", "poddisruptionbudget/tf-serving"):
    assert f"passed for resource {kind}" in proc.stdout + proc.stderr
