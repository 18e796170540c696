"""What a served model takes and returns (GetModelMetadata), and its versions' states (GetModelStatus).

`parse_metadata` reads TF Serving's metadata JSON (REST), which the gRPC
transport also builds from its proto, and trusts nothing in it: whatever the
server sends, it returns a well-formed ModelMetadata or raises
MalformedResponse. `parse_status` does the same for GetModelStatus's JSON
(GET /v1/models/NAME).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Optional

from serving.client.errors import MalformedResponse, RequestRejected, show_value

# The signatures trainer/export.py writes (repeated here: importing trainer
# would load TensorFlow, which REST users do not install).
DEFAULT_SIGNATURE = "serving_default"
ENCODED_SIGNATURE = "serving_encoded"
IMAGES_INPUT = "images"
ENCODED_INPUT = "image_bytes"
OUTPUTS = ("probabilities", "classes", "class_names")

# The largest image a model may say it takes: Pillow's own decompression-bomb
# limit (Image.MAX_IMAGE_PIXELS) is ~89 M pixels; a model asking for more is
# not one this client should resize pictures for.
MAX_MODEL_PIXELS = 1 << 26
_INT64_MAX = (1 << 63) - 1
_INTEGER = re.compile(r"-?[0-9]{1,19}")  # proto3 JSON writes int64 as a decimal string


@dataclasses.dataclass(frozen=True)
class TensorSpec:
  """A signature input or output as TF Serving describes it."""
  dtype: str  # TensorFlow's enum name, e.g. "DT_UINT8"
  shape: Optional[tuple[Optional[int], ...]]  # None: unknown rank; a None dim: any size


@dataclasses.dataclass(frozen=True)
class Signature:
  inputs: dict[str, TensorSpec]
  outputs: dict[str, TensorSpec]


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
  """What GetModelMetadata returns: the served version and its signatures."""
  name: str
  version: Optional[int]
  signatures: dict[str, Signature]

  def image_shape(self) -> tuple[int, int, int]:
    """(height, width, channels) that serving_default's uint8 `images` input takes.

    Raises:
      RequestRejected: the model does not have trainer.export's signatures,
        or declares an image no client should build (over MAX_MODEL_PIXELS,
        more than 4 channels).
    """
    signature = self.signatures.get(DEFAULT_SIGNATURE)
    spec = signature.inputs.get(IMAGES_INPUT) if signature else None
    if (spec is None or spec.dtype != "DT_UINT8" or spec.shape is None or len(spec.shape) != 4
        or None in spec.shape[1:]):
      raise RequestRejected(
          f"model {self.name!r} has no {DEFAULT_SIGNATURE} signature taking uint8 "
          f"{IMAGES_INPUT} [batch, height, width, channels] (found {spec}): this client serves "
          "models exported by trainer.export.")
    h, w, c = spec.shape[1:]
    if min(h, w, c) < 1 or c > 4 or h * w > MAX_MODEL_PIXELS:
      raise MalformedResponse(
          f"model {self.name!r} says it takes {IMAGES_INPUT} of {h}x{w} pixels with {c} channels: "
          f"not an image (1 to 4 channels, at most {MAX_MODEL_PIXELS} pixels)")
    return h, w, c


def parse_version(value: Any, what: str = "version") -> Optional[int]:
  """A model version from the server: None if absent, else an integer in [0, 2**63).

  Raises:
    MalformedResponse: anything else ("abc", 1.5, -3, true).
  """
  if value is None or value == "":
    return None
  version = _integer(value)
  if version is None or not 0 <= version <= _INT64_MAX:
    raise MalformedResponse(f"the {what} {show_value(value)} is not a non-negative integer")
  return version


def parse_metadata(name: str, body: Any) -> ModelMetadata:
  """Parses TF Serving's metadata JSON (REST), or the same built from the gRPC proto.

  Args:
    name: the model asked for; the answer's own name wins if it has one.
    body: the decoded JSON, any value at all.

  Raises:
    MalformedResponse: `body` is not TF Serving's metadata format.
  """
  body = _object(body, "the metadata")
  spec = _object(body.get("model_spec", {}), "model_spec")
  served_name = spec.get("name", name)
  if not isinstance(served_name, str):
    raise MalformedResponse(f"model_spec.name is {show_value(served_name)}, not a string")
  version = parse_version(spec.get("version"), "model_spec.version")
  metadata = _object(body.get("metadata"), "metadata")
  outer = _object(metadata.get("signature_def"), "metadata.signature_def")
  defs = _object(outer.get("signature_def"), "metadata.signature_def.signature_def")
  signatures = {}
  for key, signature in defs.items():
    signature = _object(signature, f"signature {key!r}")
    signatures[key] = Signature(
        *({k: _tensor_spec(v, f"{key}.{part}.{k}")
           for k, v in _object(signature.get(part, {}), f"{key}.{part}").items()}
          for part in ("inputs", "outputs")))
  return ModelMetadata(served_name or name, version, signatures)


def _tensor_spec(info: Any, where: str) -> TensorSpec:
  info = _object(info, where)
  dtype = info.get("dtype", "DT_INVALID")
  if not isinstance(dtype, str):
    raise MalformedResponse(f"{where}.dtype is {show_value(dtype)}, not a type name")
  shape = _object(info.get("tensor_shape", {}), f"{where}.tensor_shape")
  unknown_rank = shape.get("unknown_rank", False)
  if not isinstance(unknown_rank, bool):
    raise MalformedResponse(f"{where}.tensor_shape.unknown_rank is {show_value(unknown_rank)}")
  if unknown_rank:
    return TensorSpec(dtype, None)
  dims = shape.get("dim", [])
  if not isinstance(dims, list):
    raise MalformedResponse(f"{where}.tensor_shape.dim is {show_value(dims)}, not a list")
  sizes = []
  for dim in dims:
    # An absent size is proto3's default; TF writes -1 for "any size".
    size = _integer(_object(dim, f"{where}.tensor_shape.dim").get("size", -1))
    if size is None or abs(size) > _INT64_MAX:
      raise MalformedResponse(f"{where}.tensor_shape.dim has a size that is not an integer")
    sizes.append(None if size < 0 else size)
  return TensorSpec(dtype, tuple(sizes))


def _integer(value: Any) -> Optional[int]:
  """An int or a proto3-JSON decimal string as an int; None for anything else."""
  if type(value) is int:  # not bool, which JSON has apart from numbers
    return value
  if isinstance(value, str) and _INTEGER.fullmatch(value):
    return int(value)
  return None


def _object(value: Any, what: str) -> dict:
  if not isinstance(value, dict):
    raise MalformedResponse(f"{what} is {show_value(value)}, not a JSON object: is this a TF Serving "
                            "endpoint?")
  return value



# GetModelStatus's states (tensorflow_serving/apis/get_model_status.proto, ModelVersionStatus.State).
STATES = ("UNKNOWN", "START", "LOADING", "AVAILABLE", "UNLOADING", "END")


@dataclasses.dataclass(frozen=True)
class VersionStatus:
  """One version as GetModelStatus reports it."""
  version: int
  state: str  # one of STATES
  error: str = ""  # the load's error message; "" when it has none


def parse_status(body: Any) -> list[VersionStatus]:
  """Parses GetModelStatus's JSON (REST GET /v1/models/NAME, or the same built from the gRPC proto).

  Returns:
    Every version the server reports, newest first.

  Raises:
    MalformedResponse: `body` is not TF Serving's model status format.
  """
  body = _object(body, "the model status")
  entries = body.get("model_version_status", [])
  if not isinstance(entries, list):
    raise MalformedResponse(f"model_version_status is {show_value(entries)}, not a list")
  found = []
  for entry in entries:
    entry = _object(entry, "a model_version_status entry")
    # An absent version is proto3's default, 0; an empty or null one names no version at all.
    version = parse_version(entry.get("version", "0"), "model_version_status.version")
    if version is None:
      raise MalformedResponse(f"model_version_status.version is {show_value(entry['version'])}, "
                              "not a version number")
    state = entry.get("state", "UNKNOWN")
    if state not in STATES:
      raise MalformedResponse(f"the state {show_value(state)} of version {version} is not one of "
                              f"{', '.join(STATES)}")
    status = _object(entry.get("status", {}), "model_version_status.status")
    error = status.get("error_message", "")
    if not isinstance(error, str):
      raise MalformedResponse(f"the error message of version {version} is {show_value(error)}")
    found.append(VersionStatus(version, state, error))
  return sorted(found, key=lambda s: -s.version)
