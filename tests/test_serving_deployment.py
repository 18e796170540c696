"""k8s/serving.yaml as it runs: the container's own args and ConfigMap, the strict stand-in.

tests/k8s_harness.py's ServingDeployment starts the TF Serving stand-in
(tests/standins/tfserving) from the Deployment's command, args and mounted
ConfigMap; only mount paths, gs:// base paths and port numbers are mapped
(see its docstring). Versions are published by the trainer's own export
(trainer.export.export to PUBLISH_DIR/cifar10). Time is the one thing these
tests drive: `poll_filesystem()` / `poll_config()` stand for the 30 s and 60 s
poll intervals the manifest sets, and `edit_config` for the kubelet syncing
an edited ConfigMap. A version newly listed in models.config loads at the
next file-system poll after the config poll, as in TF Serving.
"""

import logging
import os
import re

import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from conftest import REPO
from k8s_harness import ServingDeployment
from serving.client import PredictClient
from serving.client import RequestRejected
from trainer.data import pipeline as data
from trainer import export
from trainer import models as model_lib
from trainer.data import synthetic

CIFAR = data.DatasetInfo("cifar10", (32, 32, 3), synthetic.CLASS_NAMES["cifar10"], 10, 10)
BASE = "gs://BUCKET/models/cifar10"  # models.config's base path: PUBLISH_DIR/cifar10


@pytest.fixture
def deployment(tmp_path):
  pod = ServingDeployment(os.path.join(REPO, "k8s", "serving.yaml"), str(tmp_path))
  yield pod
  pod.stop()


def _publish(pod: ServingDeployment) -> int:
  """The trainer publishes a new version (fresh weights) to PUBLISH_DIR/cifar10."""
  version, _ = export.export(model_lib.create_model("tutorial", CIFAR.image_shape, 10), CIFAR,
                             "tutorial", [pod.local(BASE)])
  return version


def _edit(pod: ServingDeployment, change) -> None:
  """Edits models.config in the ConfigMap; the kubelet syncs it; the 60 s poll elapses."""
  config = text_format.Parse(pod.read_config("models.config"),
                             model_server_config_pb2.ModelServerConfig())
  change(config.model_config_list.config[0])
  pod.edit_config("models.config", text_format.MessageToString(config))
  pod.server.poll_config()


def _served(pod: ServingDeployment, label=None) -> int:
  """The version that answers a prediction by `label` (None: no label), over gRPC."""
  with PredictClient.grpc(pod.server.grpc_target, "cifar10", label=label, attempts=1) as client:
    return client.predict(np.zeros((1, 32, 32, 3), np.uint8)).version


def _loaded(pod: ServingDeployment) -> dict[int, str]:
  return {v: state.value for v, state, _ in pod.server.core.status("cifar10")}


def test_the_manifest_args_are_all_flags_tf_serving_knows(deployment):
  # tensorflow_model_server prints an unknown argument and starts without it
  # (main.cc), so a misspelt flag would be lost without an error.
  deployment.start()
  assert deployment.server.flags.unknown == []
  assert deployment.server.flags.allow_version_labels_for_unavailable_models


def test_a_fresh_deployment_is_not_ready_until_the_trainer_publishes(deployment, caplog):
  caplog.set_level(logging.WARNING, logger="tensorflow_model_server")
  server = deployment.start()
  deployment.server.core.poll_filesystem()
  deployment.server.core.poll_filesystem()  # a minute of polls: still nothing published
  assert not server.started.is_set() and server.failed is None
  assert not deployment.probe("startup") and not deployment.probe("readiness")
  assert f"Could not find base path {BASE} for servable cifar10" in caplog.text
  os.makedirs(deployment.local(BASE))  # an empty prefix: still no version
  deployment.server.core.poll_filesystem()
  assert f"No versions of servable cifar10 found under base path {BASE}" in caplog.text
  assert not deployment.probe("startup")

  assert _publish(deployment) == 1
  deployment.server.core.poll_filesystem()
  assert server.started.wait(timeout=30), server.failed
  assert deployment.probe("startup") and deployment.probe("readiness") and deployment.probe("liveness")
  assert _served(deployment, "stable") == _served(deployment, "canary") == 1


def test_the_readme_rollout_by_label(deployment, caplog):
  """Publish 1, ready, publish 2, load it, canary to 2, stable to 2, publish 3, roll back."""
  caplog.set_level(logging.ERROR, logger="tensorflow_model_server")
  _publish(deployment)
  server = deployment.start()
  assert server.started.wait(timeout=60), server.failed
  assert deployment.probe("readiness")

  # A new version serves nothing until models.config lists it.
  assert _publish(deployment) == 2
  server.core.poll_filesystem()
  assert _loaded(deployment) == {1: "AVAILABLE"}
  assert _served(deployment) == _served(deployment, "stable") == 1

  # Moving a label to a version that is not loaded is refused, and changes nothing.
  _edit(deployment, lambda m: m.version_labels.update(canary=2))
  assert "Request to assign label to version 2 of model cifar10, which is not currently available" in caplog.text
  assert _served(deployment, "canary") == 1
  # The same file is refused again at every poll, until it is fixed.
  errors = caplog.text.count("failed to ReloadConfig")
  server.poll_config()
  assert caplog.text.count("failed to ReloadConfig") == errors + 1

  # 1. Put canary back and list version 2: it loads at the next file-system
  # poll (30 s), not at the config reload. An unlabelled request then gets it.
  _edit(deployment, lambda m: (m.version_labels.update(canary=1),
                               m.model_version_policy.specific.versions.extend([2])))
  assert _loaded(deployment) == {1: "AVAILABLE"}
  server.core.poll_filesystem()
  assert _loaded(deployment) == {2: "AVAILABLE", 1: "AVAILABLE"}
  assert (_served(deployment), _served(deployment, "stable"), _served(deployment, "canary")) == (2, 1, 1)
  # 2. canary to 2.
  _edit(deployment, lambda m: m.version_labels.update(canary=2))
  assert (_served(deployment, "stable"), _served(deployment, "canary")) == (1, 2)
  # 3. stable to 2.
  _edit(deployment, lambda m: m.version_labels.update(stable=2))
  assert (_served(deployment, "stable"), _served(deployment, "canary")) == (2, 2)
  assert deployment.probe("readiness")

  # Version 3 is published: nothing that serves changes.
  assert _publish(deployment) == 3
  server.core.poll_filesystem()
  assert _loaded(deployment) == {2: "AVAILABLE", 1: "AVAILABLE"}

  # 4. Roll back: stable to 1, which is still loaded. Over REST too.
  _edit(deployment, lambda m: m.version_labels.update(stable=1))
  assert (_served(deployment, "stable"), _served(deployment, "canary")) == (1, 2)
  with PredictClient.rest(server.rest_url, "cifar10", label="stable", attempts=1) as client:
    assert client.metadata().version == 1
  assert deployment.probe("readiness")

  # 5. Removing a version a label still names leaves that label answering NOT_FOUND.
  _edit(deployment, lambda m: (m.model_version_policy.specific.ClearField("versions"),
                               m.model_version_policy.specific.versions.extend([2])))
  server.core.poll_filesystem()
  assert _loaded(deployment) == {2: "AVAILABLE", 1: "END"}
  with pytest.raises(RequestRejected, match=re.escape("Specific(cifar10, 1)")) as raised:
    _served(deployment, "stable")
  assert raised.value.code == "NOT_FOUND"
  assert not deployment.probe("readiness")  # the pod leaves the Service: it cannot serve `stable`
