"""PredictClient: one model behind TF Serving, over either transport, with retries."""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Callable, Optional, Sequence, TypeVar

import numpy as np

from serving.client.errors import (BatchTooLarge, InputError, MalformedResponse, RequestRejected,
                                   ServerUnavailable, StatusError)
from serving.client.grpc_transport import GrpcTransport
from serving.client.metadata import (DEFAULT_SIGNATURE, ENCODED_INPUT, ENCODED_SIGNATURE,
                                     IMAGES_INPUT, ModelMetadata, VersionStatus, parse_metadata,
                                     parse_status)
from serving.client.rest import RestTransport
from serving.client.results import PredictResult

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
# Three attempts, 0.5 s then 1 s apart: rides out a server restart or a full
# batching queue without hiding a server that is really down.
DEFAULT_ATTEMPTS = 3
DEFAULT_BACKOFF_S = 0.5

_T = TypeVar("_T")
# TF Serving's message for a request larger than its max_batch_size
# (tensorflow/core/kernels/batching_util/shared_batch_scheduler.h,
# Queue::ValidateBatchTaskQueueCapacity), over gRPC and REST alike.
_TASK_SIZE = re.compile(r"Task size (\d+) is larger than maximum input batch size (\d+)")


class PredictClient:
  """Predictions from one model (optionally one version or label) behind TF Serving.

  Create with `PredictClient.rest(url, model)` or `PredictClient.grpc(target,
  model)`. A call that finds the server UNAVAILABLE is tried up to `attempts`
  times, `backoff_s` seconds apart at first and doubling; other errors are
  raised at once.

  Raises (from every call):
    InputError: the images do not fit the model; BatchTooLarge (a subclass)
      when the server's batching takes fewer images per request.
    RequestRejected: the server answered with an error status, or with a
      response this client cannot trust (MalformedResponse, a subclass).
    ServerUnavailable: the server could not be reached or did not answer in time.
  """

  def __init__(self, transport, model: str, version: Optional[int] = None,
               label: Optional[str] = None, attempts: int = DEFAULT_ATTEMPTS,
               backoff_s: float = DEFAULT_BACKOFF_S):
    if version is not None and label:
      raise InputError("give a version or a label, not both")
    self.transport = transport
    self.model = model
    self.version = version
    self.label = label
    self.attempts = max(1, attempts)
    self.backoff_s = backoff_s
    self._metadata: Optional[ModelMetadata] = None

  @classmethod
  def rest(cls, url: str, model: str, *, version: Optional[int] = None, label: Optional[str] = None,
           timeout_s: float = DEFAULT_TIMEOUT_S, **kwargs) -> "PredictClient":
    """A client for TF Serving's REST API at `url` (http://HOST:8501)."""
    if not url.startswith(("http://", "https://")):
      raise InputError(f"--rest {url!r} is not an http:// or https:// URL: use e.g. http://HOST:8501")
    return cls(RestTransport(url, timeout_s), model, version, label, **kwargs)

  @classmethod
  def grpc(cls, target: str, model: str, *, version: Optional[int] = None,
           label: Optional[str] = None, timeout_s: float = DEFAULT_TIMEOUT_S,
           **kwargs) -> "PredictClient":
    """A client for TF Serving's gRPC API at `target` (HOST:8500)."""
    if "://" in target or ":" not in target:
      raise InputError(f"--grpc {target!r} is not HOST:PORT: use e.g. localhost:8500")
    return cls(GrpcTransport(target, timeout_s), model, version, label, **kwargs)

  def __enter__(self) -> "PredictClient":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def close(self) -> None:
    self.transport.close()

  def _what(self) -> str:
    if self.version is not None:
      return f"model {self.model!r} version {self.version}"
    if self.label:
      return f"model {self.model!r} label {self.label!r}"
    return f"model {self.model!r}"

  def _with_retries(self, call: Callable[[], _T]) -> _T:
    delay = self.backoff_s
    for attempt in range(1, self.attempts + 1):
      try:
        return call()
      except MalformedResponse as e:  # the same answer would come again: never retried
        raise MalformedResponse(f"TF Serving at {self.transport.describe()} sent a malformed "
                                f"response for {self._what()}: {e}") from e
      except StatusError as e:
        where = self.transport.describe()
        if e.code == "UNAVAILABLE" and attempt < self.attempts:
          log.warning("%s is UNAVAILABLE (%s); retrying in %g s (attempt %d of %d)",
                      where, e.message, delay, attempt + 1, self.attempts)
          time.sleep(delay)
          delay *= 2
          self.transport.reset()
          continue
        if e.code == "UNAVAILABLE":
          raise ServerUnavailable(
              f"TF Serving at {where} could not be reached (UNAVAILABLE: {e.message}) after "
              f"{attempt} attempts: check the address and that the server is running.",
              e.code) from e
        if e.code == "DEADLINE_EXCEEDED":
          raise ServerUnavailable(
              f"TF Serving at {where} did not answer (DEADLINE_EXCEEDED: {e.message}): raise "
              "--timeout, or check the server's load and readiness.", e.code) from e
        if e.code == "NOT_FOUND":
          hint = "check --model and --version (GET /v1/models/NAME lists the loaded versions)."
          raise RequestRejected(f"TF Serving at {where} has no {self._what()} "
                                f"(NOT_FOUND: {e.message}): {hint}", e.code, e.message) from e
        too_large = _TASK_SIZE.search(e.message) if e.code == "INVALID_ARGUMENT" else None
        if too_large:
          sent, limit = int(too_large.group(1)), int(too_large.group(2))
          raise BatchTooLarge(
              f"TF Serving at {where} accepts at most {limit} images per request (TF Serving's "
              f"max_batch_size; this request had {sent}): use --batch-size {limit} or less",
              limit, sent) from e
        hint = (" Check --label: labels are set in models.config."
                if "version label" in e.message.lower() else "")
        raise RequestRejected(f"TF Serving at {where} rejected the request for {self._what()} "
                              f"({e.code}: {e.message}).{hint}", e.code, e.message) from e
    raise AssertionError("unreachable")

  def metadata(self) -> ModelMetadata:
    """The served version's signatures (fetched once, then cached)."""
    if self._metadata is None:
      self._metadata = self._with_retries(lambda: parse_metadata(
          self.model, self.transport.metadata(self.model, self.version, self.label)))
    return self._metadata

  def status(self) -> list[VersionStatus]:
    """Every version of the model the server knows, newest first, with its state (never cached).

    GetModelStatus ignores a version or label in the request
    (get_model_status_impl.cc), so this reports the whole model.
    """
    return self._with_retries(lambda: parse_status(self.transport.status(self.model)))

  def predict(self, images: np.ndarray) -> PredictResult:
    """Classifies uint8 images [batch, H, W, C] with the serving_default signature.

    Raises:
      InputError: `images` is not uint8 of the model's [H, W, C] (checked
        against the model's metadata before sending).
    """
    h, w, c = self.metadata().image_shape()
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (h, w, c):
      raise InputError(
          f"images must be uint8 [batch, {h}, {w}, {c}] for {self._what()}; got "
          f"{images.dtype} {list(images.shape)}")
    return self._predict(DEFAULT_SIGNATURE, IMAGES_INPUT, images)

  def predict_encoded(self, files: Sequence[bytes]) -> PredictResult:
    """Classifies encoded images (PNG/JPEG/GIF/BMP/WebP file bytes) with serving_encoded."""
    if ENCODED_SIGNATURE not in self.metadata().signatures:
      raise RequestRejected(f"{self._what()} has no {ENCODED_SIGNATURE} signature: send pixels "
                            "instead (drop --encoded).")
    return self._predict(ENCODED_SIGNATURE, ENCODED_INPUT, list(files))

  def _predict(self, signature: str, input_name: str, values: Any) -> PredictResult:
    # The transports check the outputs (results.check_outputs), including
    # that there is one prediction per value sent.
    served, outputs = self._with_retries(lambda: self.transport.predict(
        self.model, self.version, self.label, signature, input_name, values))
    return PredictResult(self.model, served, signature, outputs.probabilities, outputs.classes,
                         outputs.class_names)
