"""TF Serving's REST API, and the parsing of its predict responses.

Needs only `requests` and numpy: REST users install neither TensorFlow nor
the serving protos, so nothing here may import them.

`parse_predict_response` is a pure function of the decoded JSON, so that it
can be tested on arbitrary bodies without a socket. TF Serving writes
non-strict JSON (bare NaN and Infinity tokens), which Python's json reads;
check_outputs then refuses the non-finite probabilities.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from typing import Any, Optional

import numpy as np

from serving.client.errors import (InputError, MalformedResponse, ServerUnavailable, StatusError,
                                   first_line, show_value)
from serving.client.metadata import OUTPUTS
from serving.client.results import Outputs, check_outputs

# REST status -> the gRPC status name TF Serving mapped to it (http_server.cc).
# 400 also covers FAILED_PRECONDITION and OUT_OF_RANGE, which REST cannot tell apart.
HTTP_STATUS_NAMES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL",
    501: "UNIMPLEMENTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
# The largest body read, the same as gRPC's receive limit (grpc_transport.py).
# A batch of 32 predictions over 10 classes is ~3 KB.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
_INT64 = 1 << 63


class RestTransport:
  """TF Serving's REST API: /v1/models/<name>[/versions/<v>|/labels/<l>][:predict|/metadata]."""

  def __init__(self, url: str, timeout_s: float):
    import requests  # pylint: disable=import-outside-toplevel
    self._requests = requests
    self.url = url.rstrip("/")
    self.timeout_s = timeout_s
    self.session = requests.Session()  # keep-alive: one connection for all requests

  def describe(self) -> str:
    return self.url

  def _model_path(self, model: str, version: Optional[int], label: Optional[str]) -> str:
    path = f"{self.url}/v1/models/{urllib.parse.quote(model, safe='')}"
    if version is not None:
      path += f"/versions/{version}"
    elif label:
      path += f"/labels/{urllib.parse.quote(label, safe='')}"
    return path

  def _call(self, method: str, url: str, body: Optional[dict] = None) -> dict:
    exceptions = self._requests.exceptions
    try:
      # TF Serving never redirects, and a POST must not be replayed elsewhere.
      with self.session.request(
          method, url, data=None if body is None else json.dumps(body),
          headers={"Content-Type": "application/json"}, timeout=self.timeout_s,
          allow_redirects=False, stream=True) as response:
        content = _read_capped(response, MAX_RESPONSE_BYTES)
    except exceptions.Timeout as e:
      raise StatusError("DEADLINE_EXCEEDED", f"no answer within {self.timeout_s:g} s") from e
    except exceptions.SSLError as e:  # before ConnectionError, its base: retrying cannot help
      raise ServerUnavailable(
          f"TLS with {self.url} failed ({first_line(e)}): check the server's certificate, or use "
          "http:// for a server without TLS", "UNAVAILABLE") from e
    except exceptions.ConnectionError as e:
      reason = "connection refused" if "refused" in str(e).lower() else first_line(e)
      raise StatusError("UNAVAILABLE", reason) from e
    except (exceptions.InvalidURL, exceptions.MissingSchema, exceptions.InvalidSchema,
            exceptions.URLRequired) as e:
      raise InputError(f"--rest {self.url!r} is not a usable URL ({first_line(e)}): use e.g. "
                       "http://HOST:8501") from e
    except exceptions.RequestException as e:  # a broken body, bad headers, ...: the server's fault
      raise MalformedResponse(f"the HTTP response is broken ({type(e).__name__}: "
                              f"{first_line(e)})") from e
    if response.status_code != 200:
      payload = _json_or_none(content)
      if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        message = payload["error"]
      else:
        message = content.decode("utf-8", "replace").strip()[:200] or str(response.reason or "")
      raise StatusError(HTTP_STATUS_NAMES.get(response.status_code, "UNKNOWN"),
                        f"HTTP {response.status_code}: {first_line(message)}")
    try:
      payload = json.loads(content)  # accepts NaN and Infinity, as TF Serving writes them
    except (ValueError, RecursionError) as e:
      raise MalformedResponse(f"HTTP 200 without a JSON body ({type(e).__name__}: "
                              f"{first_line(e, 100)})") from e
    if not isinstance(payload, dict):
      raise MalformedResponse(f"HTTP 200 with {show_value(payload)}, not a JSON object")
    return payload

  def metadata(self, model: str, version: Optional[int], label: Optional[str]) -> dict:
    return self._call("GET", self._model_path(model, version, label) + "/metadata")

  def status(self, model: str) -> dict:
    """GetModelStatus: GET /v1/models/NAME, every version the server knows and its state."""
    return self._call("GET", self._model_path(model, None, None))

  def predict(self, model: str, version: Optional[int], label: Optional[str], signature: str,
              input_name: str, values: Any) -> tuple[Optional[int], Outputs]:
    del input_name  # row format: one unnamed input per instance
    if isinstance(values, np.ndarray):
      instances = values.tolist()
    else:  # encoded files: binary strings travel as {"b64": ...}
      instances = [{"b64": base64.b64encode(v).decode("ascii")} for v in values]
    body = {"signature_name": signature, "instances": instances}
    payload = self._call("POST", self._model_path(model, version, label) + ":predict", body)
    return None, parse_predict_response(payload, len(instances))

  def reset(self) -> None:
    self.session.close()
    self.session = self._requests.Session()

  def close(self) -> None:
    self.session.close()


def _read_capped(response, limit: int) -> bytes:
  """The body, refused past `limit` bytes, declared or received."""
  declared = response.headers.get("Content-Length", "")
  if declared.isdigit() and int(declared) > limit:
    raise MalformedResponse(f"the response declares {declared} bytes, more than the {limit} a "
                            "prediction can need")
  chunks, size = [], 0
  for chunk in response.iter_content(chunk_size=1 << 16):
    size += len(chunk)
    if size > limit:
      raise MalformedResponse(f"the response is over {limit} bytes, more than a prediction can need")
    chunks.append(chunk)
  return b"".join(chunks)


def _json_or_none(content: bytes) -> Any:
  try:
    return json.loads(content)
  except (ValueError, RecursionError):
    return None


def parse_predict_response(payload: Any, count: Optional[int] = None) -> Outputs:
  """The outputs in a REST predict response (row format: {"predictions": [{...}, ...]}).

  Args:
    payload: the decoded JSON body, any value at all.
    count: the number of instances sent; None to accept any number.

  Raises:
    MalformedResponse: the body is not a prediction of trainer.export's
      outputs for `count` images (see results.check_outputs).
  """
  predictions = payload.get("predictions") if isinstance(payload, dict) else None
  if not isinstance(predictions, list) or not predictions:
    raise MalformedResponse(f"the response has no list of predictions (found "
                            f"{show_value(predictions)})")
  if not all(isinstance(p, dict) for p in predictions):
    raise MalformedResponse("the predictions are not objects of named outputs (probabilities, "
                            "classes, class_names)")
  columns = {name: [p[name] for p in predictions] for name in OUTPUTS
             if all(name in p for p in predictions)}
  if len(columns) == len(OUTPUTS):
    columns["probabilities"] = _rows(columns["probabilities"], "probabilities", _is_number, "numbers")
    columns["classes"] = _classes(columns["classes"])
    columns["class_names"] = _rows(columns["class_names"], "class_names",
                                   lambda v: isinstance(v, str), "strings")
  return check_outputs(columns, count)


def _is_number(value: Any) -> bool:
  return type(value) in (int, float)  # bool is an int subclass, but not a probability


def _rows(column: list, name: str, accept, what: str) -> np.ndarray:
  """One list of `what` per prediction, all of one length, as a [n, k] array."""
  for i, row in enumerate(column):
    if not isinstance(row, list) or not all(accept(v) for v in row):
      raise MalformedResponse(f"{name} of prediction {i} is {show_value(row)}, not a list of {what}")
    if len(row) != len(column[0]):
      raise MalformedResponse(f"{name} are ragged: prediction 0 has {len(column[0])} values, "
                              f"prediction {i} has {len(row)}")
  if what == "strings":
    array = np.empty((len(column), len(column[0])), dtype=object)  # keeps str as str
    array[...] = column
    return array
  try:
    return np.array(column, dtype=np.float64)
  except OverflowError as e:  # an integer beyond any float, e.g. 10**400
    raise MalformedResponse(f"{name} contain a number beyond float range") from e


def _classes(column: list) -> np.ndarray:
  for i, value in enumerate(column):
    if type(value) is not int or not -_INT64 <= value < _INT64:
      raise MalformedResponse(f"classes of prediction {i} is {show_value(value)}, not an integer")
  return np.array(column, dtype=np.int64)
