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
  through as a version, so a non-numeric one does not match either.
  """
  import urllib.parse  # pylint: disable=import-outside-toplevel
  match = (_PREDICT_PATH if method == "POST" else _STATUS_PATH if method == "GET" else None)
  found = match.fullmatch(path) if match else None
  if not found:
    return None
  name, version, label, verb = found.groups()
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
