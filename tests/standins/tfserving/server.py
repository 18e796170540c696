"""tensorflow_model_server: flags in; gRPC then REST open once every model is available.

Source: model_servers/server.cc (Server::BuildAndStart and
PollFilesystemAndReloadConfig) and model_servers/main.cc. The ports open only
after ServerCore::Create returns, which waits, with no timeout, until every
configured model has a version AVAILABLE; so a model with nothing published
keeps both ports closed, and a probe of them fails.
"""

from __future__ import annotations

import concurrent.futures
import http.server
import logging
import socket
import threading
from typing import Callable, Optional, Sequence

import grpc
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from standins.tfserving import flags as flags_lib
from standins.tfserving import grpc_api
from standins.tfserving import rest
from standins.tfserving import rules
from standins.tfserving.core import ServerCore
from standins.tfserving.rules import ServingError

log = logging.getLogger("tensorflow_model_server")


class StartupError(Exception):
  """BuildAndStart failed: main.cc prints "Failed to start server. Error: ..." and exits 255."""


def read_config(path: str) -> model_server_config_pb2.ModelServerConfig:
  """ParseProtoTextFile<ModelServerConfig> (util/... via server.cc)."""
  config = model_server_config_pb2.ModelServerConfig()
  with open(path, encoding="utf-8") as f:
    text_format.Parse(f.read(), config)
  return config


class ModelServer:
  """One tensorflow_model_server, on 127.0.0.1, on background threads.

  Args:
    argv: the server's arguments, e.g. a manifest's container args.
    local_path: maps base paths (gs://...) to local folders.
    port_map: maps a port in the flags to the one to bind here (0: any free
      port), because the tests share one network namespace.
  """

  def __init__(self, argv: Sequence[str], local_path: Callable[[str], str] = lambda p: p,
               port_map: Optional[dict[int, int]] = None,
               core: Optional[ServerCore] = None):
    self.flags = flags_lib.parse(argv)  # FlagError: exit 255
    for arg in self.flags.unknown:
      log.warning("unknown argument: %s", arg)
    self.core = core or ServerCore(self.flags, local_path)
    self.port_map = port_map or {}
    self._http: Optional[http.server.ThreadingHTTPServer] = None
    self._grpc: Optional[grpc.Server] = None
    self.rest_port: Optional[int] = None
    self.grpc_port: Optional[int] = None
    self.grpc_socket_path: Optional[str] = None
    self.metrics_path: Optional[str] = None  # the Prometheus page, if monitoring enables it
    self.started = threading.Event()  # the ports are open
    self.failed: Optional[StartupError] = None
    self._stop = threading.Event()

  def _initial_config(self) -> model_server_config_pb2.ModelServerConfig:
    if self.flags.model_config_file:
      try:
        return read_config(self.flags.model_config_file)
      except (OSError, text_format.ParseError) as e:
        raise StartupError(f"Failed to start server. Error: {e}") from e
    # server.cc, BuildSingleModelConfig: one model, the default (latest 1) policy.
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(name=self.flags.model_name,
                                        base_path=self.flags.model_base_path,
                                        model_platform="tensorflow")
    return config

  def build_and_start(self) -> None:
    """Server::BuildAndStart; blocks until the models are available.

    Raises:
      StartupError: the config does not parse, a label is refused, or a
        model's first version failed to load.
    """
    config = self._initial_config()
    try:
      self._read_side_configs()
      self.core.reload_config(config)
    except ServingError as e:
      raise StartupError(f"Failed to start server. Error: {e}") from e
    # --port=0 is no TCP listener at all (server.cc adds it only if grpc_port != 0),
    # and the REST API is skipped if its port is 0 or the gRPC port.
    grpc_port = self.port_map.get(self.flags.port, self.flags.port) if self.flags.port else None
    rest_port = (self.port_map.get(self.flags.rest_api_port, self.flags.rest_api_port)
                 if self.flags.rest_api_port and self.flags.rest_api_port != self.flags.port else None)
    self.open_ports(grpc_port, rest_port, grpc_socket_path=self.flags.grpc_socket_path or None)
    if self.flags.model_config_file and self.flags.model_config_file_poll_wait_seconds > 0:
      def loop():
        while not self._stop.wait(self.flags.model_config_file_poll_wait_seconds):
          self.poll_config()
      threading.Thread(target=loop, daemon=True, name="config-poll").start()

  def _read_side_configs(self) -> None:
    """BuildAndStart's batching (server.cc) and monitoring (http_server.cc) files.

    Raises:
      ServingError: INVALID_ARGUMENT for a batching file without
        --enable_batching, as server.cc refuses it.
      StartupError: a file that does not read or parse.
    """
    from standins.tfserving import batching  # pylint: disable=import-outside-toplevel
    flags = self.flags
    try:
      if flags.enable_batching and self.core.batching is None:
        params = rules.BatchingParameters()
        if flags.batching_parameters_file:
          with open(flags.batching_parameters_file, encoding="utf-8") as f:
            params = batching.parse_batching_parameters(f.read())
        self.core.enable_batching(params)
      elif not flags.enable_batching and flags.batching_parameters_file:
        raise ServingError(rules.Code.INVALID_ARGUMENT,
                           "server_options.batching_parameters_file is set without setting "
                           "server_options.enable_batching to true.")
      if flags.monitoring_config_file:
        with open(flags.monitoring_config_file, encoding="utf-8") as f:
          self.metrics_path = batching.parse_monitoring_config(f.read())
    except (OSError, text_format.ParseError) as e:
      raise StartupError(f"Failed to start server. Error: {e}") from e

  def start(self) -> "ModelServer":
    """Runs build_and_start on a thread; `started` is set when the ports open.

    Returns once the initial config is in force (the server may still wait
    for its models) or start-up has failed.
    """
    def run():
      try:
        self.build_and_start()
      except StartupError as e:
        self.failed = e
        log.error("%s", e)
    thread = threading.Thread(target=run, daemon=True, name="build-and-start")
    thread.start()
    while not self.core.configured.wait(0.05) and thread.is_alive():
      pass
    return self

  def poll_config(self) -> None:
    """Server::PollFilesystemAndReloadConfig: re-read, reload; errors are only logged."""
    try:
      config = read_config(self.flags.model_config_file)
    except (OSError, text_format.ParseError) as e:
      log.error("Failed to read ModelServerConfig file: %s", e)
      return
    try:
      self.core.reload_config(config)
    except ServingError as e:
      log.error("PollFilesystemAndReloadConfig failed to ReloadConfig: %s", e.message)

  def open_ports(self, grpc_port: Optional[int], rest_port: Optional[int],
                 rest_socket: Optional[socket.socket] = None,
                 grpc_socket_path: Optional[str] = None) -> None:
    """gRPC first, then REST, as BuildAndStart does.

    Args:
      grpc_port: 0 picks a free one, None leaves gRPC off TCP. The server
        binds with SO_REUSEPORT, so a caller may hold the port with a bound,
        non-listening SO_REUSEPORT socket until then. (The real server binds
        0.0.0.0; here 127.0.0.1, as the tests share one network namespace.)
      rest_port: 0 picks a free one, None leaves REST off. (The real server
        binds "::", every interface, with no flag to narrow it:
        util/net_http/server/internal/evhttp_server.cc StartAcceptingRequests.)
      rest_socket: a bound socket that has not called listen(): REST listens
        on it instead of binding rest_port.
      grpc_socket_path: gRPC on this Unix socket too (--grpc_socket_path,
        server.cc: "unix:" + the path, as a second listening port).
    """
    if grpc_port is not None or grpc_socket_path:
      self._grpc = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4),
                               options=[("grpc.so_reuseport", 1)])
      grpc_api.add_services(self._grpc, self.core)
      if grpc_port is not None:
        self.grpc_port = self._grpc.add_insecure_port(f"127.0.0.1:{grpc_port}")
      if grpc_socket_path:
        self._grpc.add_insecure_port(f"unix:{grpc_socket_path}")
        self.grpc_socket_path = grpc_socket_path
      self._grpc.start()
    handler = rest.handler_class(self.core, self.metrics_path)
    if rest_socket is not None:
      self._http = http.server.ThreadingHTTPServer(rest_socket.getsockname(), handler,
                                                   bind_and_activate=False)
      self._http.socket.close()  # the unbound one it made
      self._http.socket = rest_socket
      self._http.server_activate()  # listen()
    elif rest_port is not None:
      self._http = http.server.ThreadingHTTPServer(("127.0.0.1", rest_port), handler)
    if self._http:
      self._http.daemon_threads = True
      self.rest_port = self._http.server_address[1]
      threading.Thread(target=self._http.serve_forever, daemon=True, name="rest").start()
    self.started.set()

  @property
  def rest_url(self) -> str:
    return f"http://127.0.0.1:{self.rest_port}"

  @property
  def grpc_target(self) -> str:
    """host:port, or unix:PATH when gRPC listens only on --grpc_socket_path."""
    if self.grpc_port is None and self.grpc_socket_path:
      return f"unix:{self.grpc_socket_path}"
    return f"127.0.0.1:{self.grpc_port}"

  def stop(self) -> None:
    self._stop.set()
    self.core.stop()
    self.close_ports()

  def close_ports(self) -> None:
    if self._http:
      self._http.shutdown()
      self._http.server_close()
      self._http = None
    if self._grpc:
      self._grpc.stop(grace=None)
      self._grpc = None

  def __enter__(self):
    return self

  def __exit__(self, *exc) -> None:
    self.stop()
