"""tensorflow_model_server's command line, parsed as the binary parses it.

Source: model_servers/main.cc (the flag list and its defaults) and
tensorflow/core/util/command_line_flags.cc (Flags::Parse). Two behaviours
matter to a manifest:
* a known flag with a value of the wrong type fails the parse: main.cc prints
  the usage and exits -1 (255);
* an unknown argument is printed ("unknown argument: ...") and IGNORED: the
  server starts without it. So a misspelt flag in k8s/serving.yaml would be
  lost silently; the stand-in records it in `Flags.unknown`, and a test
  asserts the manifest has none.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

# Every flag main.cc defines, with its type; the ones the stand-in acts on
# are fields of Flags below, the others are accepted and ignored, as they
# change nothing the tests can observe (threads, XLA, TPU, profiler...).
_KNOWN = {
    "port": int, "grpc_socket_path": str, "rest_api_port": int, "rest_api_num_threads": int,
    "rest_api_timeout_in_ms": int, "rest_api_enable_cors_support": bool, "enable_batching": bool,
    "allow_version_labels_for_unavailable_models": bool, "batching_parameters_file": str,
    "enable_per_model_batching_parameters": bool, "model_config_file": str,
    "model_config_file_poll_wait_seconds": int, "model_name": str, "model_base_path": str,
    "num_load_threads": int, "num_unload_threads": int, "max_num_load_retries": int,
    "load_retry_interval_micros": int, "file_system_poll_wait_seconds": int,
    "flush_filesystem_caches": bool, "tensorflow_session_parallelism": int,
    "tensorflow_session_config_file": str, "tensorflow_intra_op_parallelism": int,
    "tensorflow_inter_op_parallelism": int, "use_alts_credentials": bool, "ssl_config_file": str,
    "platform_config_file": str, "per_process_gpu_memory_fraction": float, "saved_model_tags": str,
    "grpc_channel_arguments": str, "grpc_max_threads": int, "enable_model_warmup": bool,
    "num_request_iterations_for_warmup": int, "version": bool, "monitoring_config_file": str,
    "remove_unused_fields_from_bundle_metagraph": bool, "prefer_tflite_model": bool,
    "num_tflite_pools": int, "num_tflite_interpreters_per_pool": int,
    "enable_signature_method_name_check": bool, "xla_cpu_compilation_enabled": bool,
    "xla_gpu_compilation_enabled": bool, "enable_profiler": bool,
    "thread_pool_factory_config_file": str, "mixed_precision": str, "skip_initialize_tpu": bool,
    "enable_grpc_healthcheck_service": bool, "enable_serialization_as_tensor_content": bool,
}


class FlagError(ValueError):
  """A known flag with a value main.cc cannot parse: the binary exits 255."""


@dataclasses.dataclass
class Flags:
  """The flags the stand-in acts on, with main.cc's defaults."""
  port: int = 8500  # 0: no gRPC on TCP (then --grpc_socket_path must be set)
  grpc_socket_path: str = ""  # gRPC on this Unix socket as well, or instead
  rest_api_port: int = 0  # 0: no REST API
  model_config_file: str = ""
  model_config_file_poll_wait_seconds: int = 0  # 0: read once, never re-read
  model_name: str = "default"
  model_base_path: str = ""
  file_system_poll_wait_seconds: int = 1
  max_num_load_retries: int = 5
  load_retry_interval_micros: int = 60 * 1000 * 1000  # 1 minute
  allow_version_labels_for_unavailable_models: bool = False
  enable_model_warmup: bool = True
  num_request_iterations_for_warmup: int = 1
  enable_batching: bool = False
  batching_parameters_file: str = ""
  monitoring_config_file: str = ""
  ssl_config_file: str = ""
  # Arguments main.cc does not know: printed and ignored.
  unknown: list[str] = dataclasses.field(default_factory=list)


def _value(name: str, kind: type, text: Optional[str]):
  if kind is bool:
    # command_line_flags.cc, ParseBoolFlag: "--name", "--name=true|false|1|0".
    if text is None or text in ("true", "1"):
      return True
    if text in ("false", "0"):
      return False
    raise FlagError(f"Couldn't interpret value {text} for flag {name}.")
  if text is None:
    raise FlagError(f"--{name} needs a value (--{name}=...)")
  try:
    return kind(text)
  except ValueError:
    raise FlagError(f"Couldn't interpret value {text} for flag {name}.") from None


def parse(argv: Sequence[str]) -> Flags:
  """Parses tensorflow_model_server's arguments (without the program name).

  Raises:
    FlagError: a known flag's value does not parse (main.cc exits 255).
  """
  flags = Flags()
  for arg in argv:
    name, _, text = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
    kind = _KNOWN.get(name)
    if kind is None:
      flags.unknown.append(arg)
      continue
    value = _value(name, kind, text if "=" in arg else None)
    if hasattr(flags, name):
      setattr(flags, name, value)
  if not flags.model_config_file and not flags.model_base_path:
    # server.cc, BuildAndStart: the server does not start (main.cc exits -1).
    raise FlagError("Both server_options.model_base_path and server_options.model_config_file "
                    "are empty!")
  if flags.port == 0 and not flags.grpc_socket_path:
    # server.cc, BuildAndStart: checked first of all, before any model loads.
    raise FlagError("At least one of server_options.grpc_port or server_options.grpc_socket_path "
                    "must be set.")
  return flags
