"""TensorProto <-> numpy, for the gRPC transport, without TensorFlow's own converter.

tf.make_ndarray would do, but it trusts the proto: a response declaring shape
[10**12] with one value (TensorFlow's compact "the last value repeats" form)
would make it allocate terabytes. `to_numpy` checks the declared size against
a bound before it allocates anything. The protos come from the
tensorflow-serving-api wheel; they are imported lazily, so that REST users
need neither it nor TensorFlow.
"""

from __future__ import annotations

import math

import numpy as np

from serving.client.errors import MalformedResponse

# The most elements a decoded tensor may have when the caller gives no
# bound of its own: 64 Mi, 256 MiB as float32.
MAX_TENSOR_ELEMENTS = 1 << 26


def _dtypes() -> dict:
  from tensorflow.core.framework import types_pb2  # pylint: disable=import-outside-toplevel
  return {np.dtype(np.uint8): types_pb2.DT_UINT8, np.dtype(np.int32): types_pb2.DT_INT32,
          np.dtype(np.int64): types_pb2.DT_INT64, np.dtype(np.float32): types_pb2.DT_FLOAT,
          np.dtype(np.float64): types_pb2.DT_DOUBLE}


def to_tensor_proto(array: np.ndarray):
  """A numpy array as a TensorProto: numbers packed in tensor_content, strings in string_val."""
  from tensorflow.core.framework import tensor_pb2  # pylint: disable=import-outside-toplevel
  from tensorflow.core.framework import types_pb2  # pylint: disable=import-outside-toplevel
  proto = tensor_pb2.TensorProto()
  for size in array.shape:
    proto.tensor_shape.dim.add(size=size)
  if array.dtype == object or array.dtype.kind in ("S", "U"):
    proto.dtype = types_pb2.DT_STRING
    proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in array.ravel())
    return proto
  if array.dtype not in _dtypes():
    raise ValueError(f"cannot send a {array.dtype} tensor")
  proto.dtype = _dtypes()[array.dtype]
  # TensorFlow reads tensor_content as little-endian, C order.
  proto.tensor_content = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
  return proto


def to_numpy(proto, max_elements: int = MAX_TENSOR_ELEMENTS) -> np.ndarray:
  """A TensorProto as a numpy array, from tensor_content or the typed *_val fields.

  Args:
    proto: a tensorflow.TensorProto, as a server sent it.
    max_elements: the most elements the caller can need; a tensor declaring
      more is refused before anything is allocated.

  Raises:
    MalformedResponse: an unsupported dtype, a negative or too large shape,
      or values that do not fit the declared shape.
  """
  from tensorflow.core.framework import types_pb2  # pylint: disable=import-outside-toplevel
  shape = [d.size for d in proto.tensor_shape.dim]
  if any(size < 0 for size in shape):
    raise MalformedResponse(f"a tensor of shape {shape}: sizes cannot be negative")
  count = math.prod(shape)  # Python ints: no overflow, whatever the server declares
  if count > max_elements:
    raise MalformedResponse(f"a tensor of shape {shape} ({count} elements), more than the "
                            f"{max_elements} this request can need")
  if proto.dtype == types_pb2.DT_STRING:
    return _repeat_last(list(proto.string_val), count, b"", object).reshape(shape)
  dtype = {v: k for k, v in _dtypes().items()}.get(proto.dtype)
  if dtype is None:
    name = types_pb2.DataType.Name(proto.dtype) if proto.dtype in types_pb2.DataType.values() \
        else str(proto.dtype)
    raise MalformedResponse(f"a tensor of dtype {name}, which no trainer.export output has")
  if proto.tensor_content:
    if len(proto.tensor_content) != count * dtype.itemsize:
      raise MalformedResponse(f"a {dtype} tensor of shape {shape} with {len(proto.tensor_content)} "
                              f"bytes of content, not {count * dtype.itemsize}")
    return np.frombuffer(proto.tensor_content, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
  field = {np.float32: proto.float_val, np.float64: proto.double_val, np.int64: proto.int64_val,
           np.int32: proto.int_val, np.uint8: proto.int_val}[dtype.type]
  try:
    return _repeat_last(list(field), count, 0, dtype).reshape(shape)
  except OverflowError as e:  # int_val holds int32s; a uint8 tensor's must fit in a byte
    raise MalformedResponse(f"a {dtype} tensor with values out of range ({e})") from e


def _repeat_last(values: list, count: int, default, dtype) -> np.ndarray:
  """`count` values from a *_val field, as TensorFlow reads one (Tensor::FromProto).

  Fewer values than the shape holds is TensorFlow's compact form: the last
  value repeats, and no values at all means the type's default.
  """
  if len(values) > count:
    raise MalformedResponse(f"a tensor with {len(values)} values for {count} elements")
  if len(values) < count:
    values = values + [values[-1] if values else default] * (count - len(values))
  if dtype is object:
    array = np.empty(count, dtype=object)  # np.array would split nested sequences
    array[:] = values
    return array
  return np.array(values, dtype=dtype)
