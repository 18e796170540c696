"""A TF Serving stand-in: tests and benchmarks only, NOT TF Serving.

The model server cannot run on the test machines (no Docker engine; the
binary is on neither PyPI nor Debian). This package behaves as
tensorflow_model_server 2.19-2.21 does, as strictly as the tests can observe,
over the real exported SavedModels:

* rules.py    each rule, a small function naming the TF Serving source it
              follows;
* flags.py    the command line, as main.cc parses it;
* core.py     ServerCore: config reloads, version labels, version policies,
              loads with retries and warm-up, unloads;
* servables.py one loaded version: signatures, Predict, warm-up replay;
* rest.py, grpc_api.py   the REST API (only /v1/ paths; others get
              libevent's 404 page) and the gRPC PredictionService and
              ModelService;
* batching.py --enable_batching: the BatchingParameters file, one shared
              scheduler with num_batch_threads threads, a queue per signature
              (task size and full-queue refusals, padding to
              allowed_batch_sizes);
* metrics.py  the Prometheus page (--monitoring_config_file):
              request_count, request_latency, load_attempt_count;
* server.py   BuildAndStart: the ports open only once every model is served.

Not implemented: large batch splitting (enable_large_batch_splitting is
refused as UNIMPLEMENTED), per-model batching parameters,
Classify/Regress/MultiInference requests, TF Serving's other metrics, TLS.

`StandIn` below is the short form tests of the client use: these models, all
versions on disk loaded, these labels.
"""

from __future__ import annotations

import socket
from typing import Optional

from tensorflow_serving.config import model_server_config_pb2

from standins.tfserving.core import ServerCore
from standins.tfserving.flags import Flags
from standins.tfserving.server import ModelServer

__all__ = ["ModelServer", "ServerCore", "StandIn"]


class StandIn:
  """A model server for `base_paths`, every version loaded (policy `all`), with `labels`.

  Usage:
    with StandIn({"cifar10": "/path/export/cifar10"}).start() as server:
      server.rest_url      # http://127.0.0.1:PORT
      server.grpc_target   # 127.0.0.1:PORT

  Args:
    base_paths: model name -> base path.
    labels: model name -> label -> version. They may name versions that are
      not loaded yet: the server runs with
      --allow_version_labels_for_unavailable_models.
    models: the core of another StandIn, to serve it on more ports.
    batching: BatchingParameters (rules.BatchingParameters, e.g. from
      batching.parse_batching_parameters) to serve as --enable_batching does;
      None (the default) for no batching.
  """

  def __init__(self, base_paths: dict[str, str], labels: Optional[dict[str, dict[str, int]]] = None,
               models: Optional[ServerCore] = None, batching=None):
    self.config = model_server_config_pb2.ModelServerConfig()
    for name, base_path in base_paths.items():
      model = self.config.model_config_list.config.add(name=name, base_path=base_path,
                                                       model_platform="tensorflow")
      model.model_version_policy.all.SetInParent()
      for label, version in (labels or {}).get(name, {}).items():
        model.version_labels[label] = version
    self._shared = models is not None
    self.models = models or ServerCore(Flags(allow_version_labels_for_unavailable_models=True,
                                             file_system_poll_wait_seconds=1))
    if batching is not None and models is None:
      self.models.enable_batching(batching)
    self._server: Optional[ModelServer] = None

  def start(self, rest_port: Optional[int] = 0, grpc_port: Optional[int] = 0,
            rest_socket: Optional[socket.socket] = None) -> "StandIn":
    """Loads the models (unless shared), then opens the ports (see ModelServer.open_ports)."""
    if not self._shared:
      self.models.reload_config(self.config)
    self._server = ModelServer(["--model_config_file=<in memory>"], core=self.models)
    self._server.open_ports(grpc_port, rest_port, rest_socket)
    return self

  @property
  def rest_port(self) -> Optional[int]:
    return self._server.rest_port if self._server else None

  @property
  def grpc_port(self) -> Optional[int]:
    return self._server.grpc_port if self._server else None

  @property
  def rest_url(self) -> str:
    return self._server.rest_url

  @property
  def grpc_target(self) -> str:
    return self._server.grpc_target

  def stop(self) -> None:
    if self._server:
      # A shared core outlives this front: then only the ports close.
      self._server.close_ports() if self._shared else self._server.stop()

  def __enter__(self) -> "StandIn":
    return self

  def __exit__(self, *exc) -> None:
    self.stop()
