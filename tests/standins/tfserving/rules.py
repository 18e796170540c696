"""TF Serving's rules, one small function each, with the source it was read from.

Paths are relative to `tensorflow_serving/` in tensorflow/serving at 2.19.1
(https://github.com/tensorflow/serving/tree/2.19.1/tensorflow_serving); the
2.21 code reads the same. Nothing here
imports TensorFlow: the rules are plain data in, decision out, so each has a
fast test of its own (tests/test_tfserving_rules.py).
"""

from __future__ import annotations

import dataclasses
import enum
import re
from typing import Iterable, Mapping, Optional

SOURCE = "https://github.com/tensorflow/serving/blob/2.19.1/tensorflow_serving/"


class Code(enum.Enum):
  """The canonical error codes (grpc.StatusCode's names and numbers)."""
  OK = 0
  CANCELLED = 1
  UNKNOWN = 2
  INVALID_ARGUMENT = 3
  DEADLINE_EXCEEDED = 4
  NOT_FOUND = 5
  ALREADY_EXISTS = 6
  PERMISSION_DENIED = 7
  RESOURCE_EXHAUSTED = 8
  FAILED_PRECONDITION = 9
  ABORTED = 10
  OUT_OF_RANGE = 11
  UNIMPLEMENTED = 12
  INTERNAL = 13
  UNAVAILABLE = 14
  DATA_LOSS = 15
  UNAUTHENTICATED = 16


class ServingError(Exception):
  """An error with the status code TF Serving would return."""

  def __init__(self, code: Code, message: str):
    super().__init__(f"{code.name}: {message}")
    self.code = code
    self.message = message


# ------------------------------------------------------------ HTTP mapping

# model_servers/http_server.cc, ToHTTPStatusCode.
_HTTP_STATUS = {
    Code.OK: 200, Code.CANCELLED: 499, Code.INVALID_ARGUMENT: 400,
    Code.FAILED_PRECONDITION: 400, Code.OUT_OF_RANGE: 400, Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409, Code.ABORTED: 409, Code.PERMISSION_DENIED: 403,
    Code.UNAUTHENTICATED: 401, Code.RESOURCE_EXHAUSTED: 429, Code.UNIMPLEMENTED: 501,
    Code.UNAVAILABLE: 503, Code.DEADLINE_EXCEEDED: 504}


def http_status(code: Code) -> int:
  """The HTTP status TF Serving's REST API answers for an error code.

  Source: model_servers/http_server.cc, ToHTTPStatusCode (UNKNOWN, INTERNAL,
  DATA_LOSS and anything unlisted are 500).
  """
  return _HTTP_STATUS.get(code, 500)


# -------------------------------------------------------------- REST paths

# model_servers/http_rest_api_util.h: kPredictionApiGegex and kModelStatusApiRegex.
_PREDICT_PATH = re.compile(
    r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)")
_STATUS_PATH = re.compile(
    r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?")


@dataclasses.dataclass(frozen=True)
class RestPath:
  model: str
  version: Optional[int]
  label: Optional[str]
  verb: str  # "predict", "classify", "regress" (POST); "status", "metadata" (GET)


def parse_rest_path(method: str, path: str) -> Optional[RestPath]:
  """A REST request path as TF Serving parses it; None when it does not match.

  Source: model_servers/http_rest_api_util.cc, ParseModelInfo. A path that
  does not match is "Malformed request" (INVALID_ARGUMENT, a JSON error body,
  from http_rest_api_handler.cc, ProcessRequest). The regexes only let digits
  through as a version, so a non-numeric one does not match either; digits
  beyond an int64 are INVALID_ARGUMENT "Failed to convert version".
  """
  import urllib.parse  # pylint: disable=import-outside-toplevel
  match = (_PREDICT_PATH if method == "POST" else _STATUS_PATH if method == "GET" else None)
  found = match.fullmatch(path) if match else None
  if not found:
    return None
  name, version, label, verb = found.groups()
  if version and int(version) >= 2 ** 63:  # absl::SimpleAtoi into an int64 fails
    raise ServingError(Code.INVALID_ARGUMENT, f"Failed to convert version: {version} to numeric.")
  return RestPath(urllib.parse.unquote(name or ""), int(version) if version else None,
                  urllib.parse.unquote(label) if label else None,
                  (verb or "status").lower())


# -------------------------------------------------------------- JSON output


def format_decimal(value: float, double: bool = False) -> str:
  """A float as TF Serving's REST API writes it (not always strict JSON).

  Source: util/json_tensor.cc, WriteDecimal: absl::StrCat's six significant
  digits ("%g"), or max_digits10 digits (9 for float, 17 for double) when six
  do not round-trip; ".0" added to whole numbers not in scientific notation;
  NaN and (-)Infinity written as bare tokens.
  """
  import math  # pylint: disable=import-outside-toplevel
  import struct  # pylint: disable=import-outside-toplevel
  if math.isnan(value):
    return "NaN"
  if math.isinf(value):
    return "-Infinity" if value < 0 else "Infinity"

  def as_dtype(x: float) -> float:
    return x if double else struct.unpack("f", struct.pack("f", x))[0]

  text = "%g" % value
  if as_dtype(float(text)) != value:
    text = "%.*g" % (17 if double else 9, value)
  if "." not in text and "e" not in text:
    text += ".0"
  return text


# ------------------------------------------------------------------ config


def validate_model_config_list(models: Iterable[tuple[str, str]]) -> None:
  """Rejects a config that TF Serving's ReloadConfig refuses before it changes anything.

  Source: model_servers/server_core.cc, ValidateModelConfigList: model names
  are unique, and base paths are absolute paths or URIs.
  """
  models = list(models)
  seen = set()
  for name, _ in models:
    if name in seen:
      raise ServingError(Code.INVALID_ARGUMENT,
                         f"Illegal to list model {name} multiple times in config list")
    seen.add(name)
  for name, base_path in models:
    if not (base_path.startswith("/") or "://" in base_path):
      raise ServingError(Code.INVALID_ARGUMENT,
                         f"Expected model {name} to have an absolute path or URI; got "
                         f"base_path()={base_path}")


def assign_labels(labels: Mapping[str, Mapping[str, int]],
                  current: Mapping[str, Mapping[str, int]],
                  available: Mapping[str, Iterable[int]],
                  allow_unavailable: bool) -> dict[str, dict[str, int]]:
  """The new label map for a config, or FAILED_PRECONDITION if TF Serving refuses it.

  Source: model_servers/server_core.cc, UpdateModelVersionLabelMap. Every
  label must name a version that is AVAILABLE now. With
  --allow_version_labels_for_unavailable_models, a label that is new, or that
  names the same version as before, needs no available version; moving an
  existing label to another version still does. ReloadConfig calls this
  before it loads anything (also at start-up, from ServerCore::Create), and
  a refusal leaves the old map in place.

  Args:
    labels: model -> label -> version, from the new config.
    current: the label map in force.
    available: model -> the versions AVAILABLE now.
    allow_unavailable: --allow_version_labels_for_unavailable_models.
  """
  new: dict[str, dict[str, int]] = {}
  for model, model_labels in labels.items():
    for label, version in model_labels.items():
      previous = current.get(model, {}).get(label)
      exempt = allow_unavailable and (previous is None or previous == version)
      if not exempt and version not in set(available.get(model, ())):
        raise ServingError(Code.FAILED_PRECONDITION,
                           f"Request to assign label to version {version} of model {model}, "
                           "which is not currently available for inference")
      new.setdefault(model, {})[label] = version
  return new


# -------------------------------------------------------- version policies


def wanted_versions(policy: str, on_disk: Iterable[int], num_versions: int = 1,
                    specific: Iterable[int] = ()) -> set[int]:
  """The versions a model's policy wants loaded, from the numeric directories found.

  Source: sources/storage_path/file_system_storage_path_source.cc,
  AspireLatestVersions / AspireAllVersions / AspireSpecificVersions:
  `latest` wants the max(num_versions, 1) highest, `all` every one, and
  `specific` those listed that exist. A version whose directory disappears
  leaves the wanted set.
  """
  versions = sorted(set(on_disk))
  if policy == "latest":
    return set(versions[-max(num_versions, 1):]) if versions else set()
  if policy == "all":
    return set(versions)
  if policy == "specific":
    return set(versions) & set(specific)
  raise ValueError(f"unknown version policy {policy!r}")


def version_directories(children: Iterable[str]) -> dict[int, str]:
  """Version number -> directory name, for the children of a base path.

  Source: sources/storage_path/file_system_storage_path_source.cc,
  IndexChildrenByVersion and ParseVersionNumber (absl::SimpleAtoi: an
  optional sign and surrounding whitespace are accepted; anything else, such
  as a `.staging-*` directory, is skipped). Of two names for one number, the
  later in listing order wins.
  """
  found = {}
  for child in sorted(children):
    child = child.split("/", 1)[0]  # GCS lists descendants, not children
    if re.fullmatch(r"\s*[+-]?\d+\s*", child):
      found[int(child)] = child
  return found


class State(enum.Enum):
  """A version's state (core/loader_harness.h; GetModelStatus's names)."""
  NEW = "START"  # aspired, not yet tried
  LOADING = "LOADING"
  AVAILABLE = "AVAILABLE"
  UNLOADING = "UNLOADING"
  END = "END"  # unloaded, or failed to load (with an error)


@dataclasses.dataclass(frozen=True)
class Snapshot:
  version: int
  aspired: bool
  state: State


def next_action(versions: Iterable[Snapshot]) -> Optional[tuple[str, int]]:
  """The manager's next step for one model: ("unload", v), ("load", v) or None.

  Source: core/availability_preserving_policy.cc, GetNextAction. The lowest
  unwanted AVAILABLE version is unloaded first if no version is wanted, a
  wanted one is already AVAILABLE, or more than one unwanted one is
  AVAILABLE; otherwise the highest wanted version never tried is loaded. So
  with `latest 1` the new version loads before the old one unloads, and
  with `latest N >= 2` the oldest unloads first. A version that ended in an
  error is not NEW, so it is not tried again while it stays wanted.
  """
  versions = list(versions)
  has_aspired = any(v.aspired for v in versions)
  has_aspired_serving = any(v.aspired and v.state == State.AVAILABLE for v in versions)
  unaspired_serving = [v.version for v in versions if not v.aspired and v.state == State.AVAILABLE]
  if (not has_aspired or has_aspired_serving or len(unaspired_serving) > 1) and unaspired_serving:
    return "unload", min(unaspired_serving)
  new = [v.version for v in versions if v.aspired and v.state == State.NEW]
  if new:
    return "load", max(new)
  return None


# ------------------------------------------------------------- resolution


def resolve(model: str, version: Optional[int], label: Optional[str],
            labels: Mapping[str, Mapping[str, int]], available: Iterable[int]) -> int:
  """The version a request is served by, or TF Serving's error.

  Sources: model_servers/server_core.cc, GetServableHandle and
  GetModelVersionForLabel (an unknown label is INVALID_ARGUMENT); a request
  for a version that is not AVAILABLE, including one a label still names
  after the policy unloaded it, is NOT_FOUND from core/manager.h
  (ServableRequest's DebugString: Specific(M, V) or Latest(M)).
  """
  available = sorted(set(available))
  if label:
    if label not in labels.get(model, {}):
      raise ServingError(Code.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}")
    version = labels[model][label]
  if version is None:
    if not available:
      raise ServingError(Code.NOT_FOUND, f"Servable not found for request: Latest({model})")
    return available[-1]
  if version not in available:
    raise ServingError(Code.NOT_FOUND, f"Servable not found for request: Specific({model}, {version})")
  return version


# ----------------------------------------------------------------- warm-up

WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
# servables/tensorflow/saved_model_warmup_util.cc: WarmupConsts::kMaxNumRecords.
MAX_WARMUP_RECORDS = 1000
# servables/tensorflow/saved_model_warmup.cc, RunWarmupRequest: these two log
# types are UNIMPLEMENTED; the four request types run; a record with no
# log type set runs nothing and passes.
UNSUPPORTED_WARMUP_LOG_TYPES = ("predict_streamed_log", "session_run_log")


def check_warmup_log_type(log_type: Optional[str]) -> None:
  """Refuses a warm-up record of a type TF Serving cannot replay (failing the load).

  Source: servables/tensorflow/saved_model_warmup.cc, RunWarmupRequest.
  """
  if log_type in UNSUPPORTED_WARMUP_LOG_TYPES:
    raise ServingError(Code.UNIMPLEMENTED, f"Unsupported log_type for warmup: {log_type}")


def check_warmup_count(count: int, path: str) -> None:
  """Fails the load once more than MAX_WARMUP_RECORDS records have run.

  Source: servables/tensorflow/saved_model_warmup_util.cc, RunSavedModelWarmup:
  each record runs, then the count is checked, so the 1001st record runs and
  then fails the whole load.
  """
  if count > MAX_WARMUP_RECORDS:
    raise ServingError(Code.INVALID_ARGUMENT,
                       f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}")


# ---------------------------------------------------------------- platform


def model_platform(name: str, platform: str, model_type: int = 0) -> str:
  """A model's platform, or INVALID_ARGUMENT when the config names none.

  Source: model_servers/server_core.cc, GetPlatform: the deprecated
  model_type (1 = TENSORFLOW) or model_platform, not both and not neither.
  ReloadConfig reaches it from ValidateNoModelsChangePlatforms (models
  already served, before the new config is stored) and from
  CreateStoragePathRoutes (every model, after the label map is updated); at
  start-up the latter fails ServerCore::Create, so the server does not start.
  """
  if model_type:
    if platform:
      raise ServingError(Code.INVALID_ARGUMENT,
                         "Illegal setting both ModelServerConfig::model_type (deprecated) and "
                         f"ModelServerConfig::model_platform, model name is {name}")
    if model_type != 1:
      raise ServingError(Code.INVALID_ARGUMENT,
                         f"ModelServerConfig::model_type choice {model_type} not supported.")
    return "tensorflow"
  if not platform:
    raise ServingError(Code.INVALID_ARGUMENT,
                       "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                       f"ModelServerConfig::model_platform, model name is {name}")
  return platform


def check_platform_supported(name: str, platform: str) -> None:
  """Source: model_servers/server_core.cc, CreateStoragePathRoutes (INVALID_ARGUMENT).

  tensorflow_model_server's platform config map (platform_config_util.cc)
  has "tensorflow" only, unless --prefer_tflite_model adds nothing else here.
  """
  if platform != "tensorflow":
    raise ServingError(Code.INVALID_ARGUMENT, f"Model {name} requests unsupported platform {platform}")


def check_platforms_unchanged(old: Mapping[str, str], new: Mapping[str, str]) -> None:
  """Source: model_servers/server_core.cc, ValidateNoModelsChangePlatforms.

  Args:
    old, new: model name -> platform (already through model_platform).
  """
  for name, platform in new.items():
    if name in old and old[name] != platform:
      raise ServingError(Code.INVALID_ARGUMENT,
                         f"Illegal to change a model's platform. For model {name} platform was "
                         f"{old[name]} and new platform requested is {platform}")


# --------------------------------------------------------- start-up wait


def models_settled(states: Mapping[str, Mapping[int, State]]
                   ) -> Optional[dict[str, tuple[int, State]]]:
  """Whether ServerCore's wait for its models is over, and what each reached.

  Source: core/servable_state_monitor.cc, HasAnyServableInStreamReachedState
  and ShouldSendStateReachedNotification, called by
  model_servers/server_core.cc, WaitUntilModelsAvailable with
  ServableRequest::Latest(model) and goal AVAILABLE. For each model the
  wait ends as soon as ANY version it has seen is AVAILABLE or END, the
  first such in the monitor's order (highest version first); the whole wait
  ends once every model's has. It failed ("N model(s) did not become
  available") if any model's first such version is END: so a failed (or
  unloaded) version 2 ends the wait even while version 1 could still load.

  Args:
    states: model -> version -> state, every version the monitor has seen.

  Returns:
    None while some model has not settled; else model -> (version, state).
  """
  reached = {}
  for model, versions in states.items():
    found = next(((v, s) for v, s in sorted(versions.items(), reverse=True)
                  if s in (State.AVAILABLE, State.END)), None)
    if found is None:
      return None
    reached[model] = found
  return reached


# ------------------------------------------------------------ load retries


def keep_retrying_load(failed_attempts: int, max_num_load_retries: int, aspired: bool) -> bool:
  """Whether a failed load is tried again.

  Source: util/retrier.cc, Retry (at most 1 + max_num_load_retries
  attempts, and only while should_retry) with core/loader_harness.cc,
  LoaderHarness::Load; should_retry turns false when
  core/aspired_versions_manager.cc, ProcessAspiredVersionsRequest finds the
  version no longer aspired and calls BasicManager::CancelLoadServableRetry.
  The check follows a failed attempt: an attempt already sleeping its
  --load_retry_interval_micros still runs.
  """
  return failed_attempts < max(max_num_load_retries, 0) + 1 and aspired


# ----------------------------------------------------------- config polls


def reload_polls_now(first_config: bool, file_system_poll_wait_seconds: int) -> bool:
  """Whether ReloadConfig lists the base paths at once, or leaves it to the next poll.

  Source: sources/storage_path/file_system_storage_path_source.cc:
  SetAspiredVersionsCallback (first config only) starts the poller, whose
  first run is at once (PeriodicFunction, or a one-shot thread for 0; none
  for a negative interval); UpdateConfig (every later config) only
  un-aspires the models dropped from the config. So a version newly listed
  in models.config, or a model added to it, loads at the next
  --file_system_poll_wait_seconds poll, not at the reload.
  """
  return first_config and file_system_poll_wait_seconds >= 0


# -------------------------------------------------------------- signatures


def predict_signature_not_found(key: str) -> ServingError:
  """gRPC Predict (and warm-up) with a signature the model lacks: FAILED_PRECONDITION.

  Source: servables/tensorflow/predict_util.cc, internal::RunPredict.
  """
  return ServingError(Code.FAILED_PRECONDITION, f"Serving signature key \"{key}\" not found.")


def rest_signature_not_found(key: str) -> ServingError:
  """REST :predict with a signature the model lacks: INVALID_ARGUMENT (HTTP 400).

  Source: model_servers/http_rest_api_handler.cc, GetInfoMap, which the JSON
  parser (util/json_tensor.cc, FillPredictRequestFromJson) calls before
  RunPredict is reached.
  """
  return ServingError(Code.INVALID_ARGUMENT,
                      f"Serving signature name: \"{key}\" not found in signature def")


# ------------------------------------------------------------ REST dispatch

# model_servers/http_rest_api_util.h, kHTTPRestApiHandlerPathRegex.
_API_PATH = re.compile(r"(?i)/v1/.*")
# libevent's evhttp_send_error(req, HTTP_NOTFOUND, NULL): its ERR_FORMAT page,
# the reason phrase filled in (served as text/html, connection closed).
NOT_FOUND_PAGE = ("<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n"
                  "<H1>Not Found</H1>\n</BODY></HTML>\n")


def rest_route(path: str, metrics_path: Optional[str]) -> Optional[str]:
  """Which handler answers a REST path: "metrics", "api", or None (404).

  Source: util/net_http/server/internal/evhttp_server.cc,
  EvHTTPServer::DispatchEvRequest: an exact registered path (the Prometheus
  page, model_servers/http_server.cc CreateAndStartHttpServer, only when
  monitoring enables it) first, then the dispatcher, which takes
  kHTTPRestApiHandlerPathRegex ("(?i)/v1/.*") only; anything else gets
  libevent's 404 page (NOT_FOUND_PAGE), not a JSON error.
  """
  if metrics_path is not None and path == metrics_path:
    return "metrics"
  if _API_PATH.fullmatch(path):
    return "api"
  return None


# ------------------------------------------------------------ model status


def version_status(state: State, health: Optional[ServingError]) -> tuple[Code, str]:
  """The (error_code, error_message) GetModelStatus reports for a version.

  Source: model_servers/get_model_status_impl.cc,
  AddModelVersionStatusToResponse: ToStatusProto(servable_state.health), the
  status the version's load (or unload) ended with: OK for AVAILABLE and a
  clean unload, the load's own error code (NOT_FOUND, INVALID_ARGUMENT, ...)
  for a failed one.
  """
  del state  # the health alone decides; END is OK after a clean unload
  if health is None:
    return Code.OK, ""
  return health.code, health.message


# ------------------------------------------------------------------ batching


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
  """BatchingParameters (servables/tensorflow/session_bundle_config.proto), the fields acted on.

  Defaults: tensorflow's SharedBatchScheduler<TaskType>::QueueOptions
  (core/kernels/batching_util/shared_batch_scheduler.h: input_batch_size_limit
  1000, batch_timeout_micros 0, max_enqueued_batches 10) and Options
  (num_batch_threads = the number of CPUs, here 1 when unknown), applied by
  servables/tensorflow/bundle_factory_util.h, GetQueueOptions and
  CreateBatchScheduler only for the fields that are set.
  """
  max_batch_size: int = 1000
  batch_timeout_micros: int = 0
  max_enqueued_batches: int = 10
  num_batch_threads: int = 1
  allowed_batch_sizes: tuple[int, ...] = ()
  enable_large_batch_splitting: bool = False
  max_execution_batch_size: Optional[int] = None


def check_batching_parameters(params: BatchingParameters) -> None:
  """Refuses what the batching session refuses when a version loads.

  Source: batching/batching_session.cc, CreateBatchingSession: without large
  batch splitting the last allowed_batch_sizes entry must equal
  max_batch_size; entries must increase.
  """
  sizes = list(params.allowed_batch_sizes)
  if sizes != sorted(set(sizes)):
    raise ServingError(Code.INVALID_ARGUMENT,
                       "allowed_batch_sizes entries must be monotonically increasing")
  if sizes and not params.enable_large_batch_splitting and sizes[-1] != params.max_batch_size:
    raise ServingError(Code.INVALID_ARGUMENT,
                       f"Last entry in allowed_batch_sizes must match max_batch_size; last entry "
                       f"was {sizes[-1]}; expected {params.max_batch_size}")


def check_batch_task(task_size: int, params: BatchingParameters, open_batch_size: int,
                     enqueued_batches: int) -> bool:
  """Whether a Predict's task fits a batching queue: True to start a new batch, False to join the open one.

  Source: tensorflow/core/kernels/batching_util/shared_batch_scheduler.h
  (tensorflow/tensorflow), Queue::ValidateBatchTaskQueueCapacity and
  ScheduleWithoutOrEagerSplitImpl, reached from batching/batching_session.cc,
  BatchingSession::InternalRun after RunPredict's own checks. A task larger
  than max_batch_size (input_batch_size_limit) is INVALID_ARGUMENT whatever
  the queue holds; without enable_large_batch_splitting (k8s/serving.yaml
  sets none) a task that does not fit the open batch starts a new one,
  UNAVAILABLE if max_enqueued_batches batches (the open one included; those
  being processed by the num_batch_threads threads are out of the queue)
  are already enqueued.

  Args:
    task_size: the request's batch, its inputs' first dimension.
    open_batch_size: the tasks' total in the open (last) batch.
    enqueued_batches: the batches in the queue, the open one included.
  """
  if task_size > params.max_batch_size:
    raise ServingError(Code.INVALID_ARGUMENT,
                       f"Task size {task_size} is larger than maximum input batch size "
                       f"{params.max_batch_size}")
  if params.enable_large_batch_splitting:
    raise ServingError(Code.UNIMPLEMENTED, "the stand-in does not split large batches")
  if open_batch_size + task_size > params.max_batch_size:
    if enqueued_batches >= params.max_enqueued_batches:
      raise ServingError(Code.UNAVAILABLE,
                         f"The batch scheduling queue to which this task was submitted is full; "
                         f"currently {enqueued_batches} batches enqueued and max_enqueued_batches "
                         f"is {params.max_enqueued_batches}")
    return True
  return False


def padded_batch_size(size: int, allowed: Iterable[int]) -> int:
  """The size a batch is padded to: the smallest allowed size >= size (none listed: no padding).

  Source: batching/batching_util.cc, RoundToLowestAllowedBatchSize, from
  batching_session.cc, MergeInputTensors.
  """
  return next((a for a in sorted(allowed) if a >= size), size)


# ---------------------------------------------------------------- metrics


def prometheus_name(metric: str) -> str:
  """A TensorFlow monitoring metric's name as the Prometheus page writes it.

  Source: util/prometheus_exporter.cc, GetPrometheusMetricName: every
  character outside [a-zA-Z0-9_] becomes ":" (so
  /tensorflow/serving/request_count is :tensorflow:serving:request_count).
  """
  name = re.sub(r"[^a-zA-Z0-9_]", ":", metric)
  return "_" + name if name[:1].isdigit() else name


def latency_buckets() -> list[float]:
  """request_latency's bucket limits, in microseconds.

  Source: servables/tensorflow/util.cc, request_latency:
  monitoring::Buckets::Exponential(10, 1.8, 33): 10 * 1.8^i for i < 33
  (~20 minutes at the top), then DBL_MAX, which tsl's ExplicitBuckets adds and
  the exporter writes as le="+Inf".
  """
  return [10 * 1.8 ** i for i in range(33)]
