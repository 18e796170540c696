"""The client survives any server: a hostile answer ends in one `error: ` line, never a traceback.

Hostile servers here are real sockets on 127.0.0.1: an `http.server` and a
grpcio PredictionService, each answering with crafted bodies or protos. The
CLI runs as a subprocess, as a user runs it. Exit code 3 is the server's
fault, 2 the local input's, 69 an unreachable server; 1 would be a bug.
"""

from __future__ import annotations

import copy
import dataclasses
import http.server
import json
import struct
import subprocess
import sys
import threading
import zlib
from concurrent import futures
from typing import Optional

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

from conftest import REPO
from serving import client as client_lib

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PROBABILITIES = [0.55] + [0.05] * 9


def _signature_defs() -> get_model_metadata_pb2.SignatureDefMap:
  """trainer.export's two signatures for 32x32 RGB images and 10 classes, as protos."""
  def info(dtype, *dims):
    tensor = meta_graph_pb2.TensorInfo(dtype=dtype)
    for size in dims:
      tensor.tensor_shape.dim.add(size=size)
    return tensor

  outputs = {"probabilities": info(types_pb2.DT_FLOAT, -1, 10), "classes": info(types_pb2.DT_INT64, -1),
             "class_names": info(types_pb2.DT_STRING, -1, 10)}
  defs = get_model_metadata_pb2.SignatureDefMap()
  for key, name, tensor in (("serving_default", "images", info(types_pb2.DT_UINT8, -1, 32, 32, 3)),
                            ("serving_encoded", "image_bytes", info(types_pb2.DT_STRING, -1))):
    defs.signature_def[key].inputs[name].CopyFrom(tensor)
    for output, spec in outputs.items():
      defs.signature_def[key].outputs[output].CopyFrom(spec)
    defs.signature_def[key].method_name = "tensorflow/serving/predict"
  return defs


# What TF Serving's REST API answers to GET /v1/models/cifar10/metadata: the
# same protos in proto3 JSON (int64 as strings).
METADATA = {"model_spec": {"name": "cifar10", "version": "2", "signature_name": ""},
            "metadata": {"signature_def": json_format.MessageToDict(
                _signature_defs(), preserving_proto_field_name=True)}}


def _metadata(version="2") -> dict:
  body = copy.deepcopy(METADATA)
  body["model_spec"]["version"] = version
  return body


def _predictions(n=2, **fields) -> dict:
  """A row-format predict body for n images; `fields` replace an output in every row."""
  row = {"probabilities": PROBABILITIES, "classes": 0, "class_names": NAMES, **fields}
  return {"predictions": [{k: v for k, v in row.items() if v is not _ABSENT} for _ in range(n)]}


_ABSENT = object()


@pytest.fixture(scope="module")
def image(tmp_path_factory):
  path = tmp_path_factory.mktemp("images") / "cat.png"
  Image.new("RGB", (32, 32), (200, 100, 50)).save(path)
  return str(path)


def run_client(*args, timeout=120):
  return subprocess.run([sys.executable, "-m", "serving.client", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)


def assert_one_error(proc, exit_code: int, *fragments: str) -> str:
  """Asserts the exit code and that stderr is exactly one `error: ` line holding `fragments`."""
  assert "Traceback" not in proc.stderr, proc.stderr
  assert proc.returncode == exit_code, proc.stderr
  lines = proc.stderr.splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
  for fragment in fragments:
    assert fragment in lines[0], lines[0]
  assert proc.stdout == ""
  return lines[0]


# ------------------------------------------------------------ hostile REST


@dataclasses.dataclass
class Reply:
  """What the hostile HTTP server answers: JSON with a status, or raw bytes on the socket."""
  body: bytes = b""
  status: int = 200
  raw: Optional[bytes] = None  # the whole response, status line included, then close


def _json(value) -> Reply:
  return Reply(json.dumps(value).encode())  # allow_nan: NaN and Infinity as TF Serving writes them


class _Handler(http.server.BaseHTTPRequestHandler):
  protocol_version = "HTTP/1.1"

  def do_GET(self):  # pylint: disable=invalid-name
    self._reply(self.server.replies["metadata"] if self.path.endswith("/metadata")
                else Reply(b'{"error": "not here"}', 404))

  def do_POST(self):  # pylint: disable=invalid-name
    self.rfile.read(int(self.headers.get("Content-Length", 0)))
    self._reply(self.server.replies["predict"])

  def _reply(self, reply: Reply):
    if reply.raw is not None:
      self.wfile.write(reply.raw)
      self.close_connection = True
      return
    self.send_response(reply.status)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(reply.body)))
    self.end_headers()
    self.wfile.write(reply.body)

  def log_message(self, *args):
    pass


@pytest.fixture(scope="module")
def hostile_rest():
  """An HTTP server on 127.0.0.1 answering with `server.replies` ("metadata", "predict")."""
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
  server.daemon_threads = True
  threading.Thread(target=server.serve_forever, daemon=True).start()
  server.url = f"http://127.0.0.1:{server.server_address[1]}"
  yield server
  server.shutdown()
  server.server_close()


def _case_id(message: str) -> str:
  return "-".join(message.split()[:5])


def _serve(server, predict: Reply, metadata: Optional[Reply] = None):
  server.replies = {"metadata": metadata or _json(METADATA), "predict": predict}


def _huge_nesting(depth=100_000) -> bytes:
  return b'{"predictions": ' + b"[" * depth + b"]" * depth + b"}"


def _raw(head: str, body: bytes = b"") -> Reply:
  return Reply(raw=head.replace("\n", "\r\n").encode() + b"\r\n" + body)


@pytest.mark.parametrize("reply, message", [
    (Reply(b'{"predictions": ['), "HTTP 200 without a JSON body"),
    (_json([1, 2]), "HTTP 200 with a JSON array, not a JSON object"),
    (_json({"outputs": {"probabilities": [PROBABILITIES] * 2}}), "no list of predictions"),
    (_json({"predictions": [PROBABILITIES, PROBABILITIES]}), "not objects of named outputs"),
    (_json({"predictions": [{"probabilities": PROBABILITIES, "classes": 0, "class_names": NAMES},
                            {"probabilities": PROBABILITIES[:9], "classes": 0, "class_names": NAMES}]}),
     "probabilities are ragged: prediction 0 has 10 values, prediction 1 has 9"),
    (_json(_predictions(probabilities=0.5)), "probabilities of prediction 0 is 0.5, not a list of numbers"),
    (_json(_predictions(probabilities=[PROBABILITIES])), "not a list of numbers"),
    (_json(_predictions(class_names=NAMES[:9])), "class_names are strings [2, 9], not [batch, classes] = [2, 10]"),
    (_json(_predictions(classes=[3])), "classes of prediction 0 is a JSON array, not an integer"),
    (_json(_predictions(probabilities=[str(p) for p in PROBABILITIES])), "not a list of numbers"),
    (_json(_predictions(probabilities=[{"p": p} for p in PROBABILITIES])), "not a list of numbers"),
    (_json(_predictions(probabilities=None)), "probabilities of prediction 0 is None"),
    (_json(_predictions(classes=None)), "classes of prediction 0 is None, not an integer"),
    (_json(_predictions(probabilities=[True] * 10)), "not a list of numbers"),
    (_json(_predictions(classes=True)), "classes of prediction 0 is True, not an integer"),
    (_json(_predictions(class_names=[1] * 10)), "class_names of prediction 0 is a JSON array, not a list of strings"),
    (_json(_predictions(class_names=_ABSENT)), "no class_names output"),
    (_json(_predictions(n=1)), "1 predictions for 2 images"),
    (_json(_predictions(classes=10)), "a class index is outside [0, 10)"),
    (_json(_predictions(probabilities=[float("nan")] * 10)), "probabilities contain NaN or infinity"),
    (_json(_predictions(probabilities=[float("inf")] + [0.0] * 9)), "probabilities contain NaN or infinity"),
    (Reply(json.dumps(_predictions()).replace("0.55", "1e400").encode()), "NaN or infinity"),
    (Reply(json.dumps(_predictions()).replace("0.55", "1" + "0" * 400).encode()), "beyond float range"),
    (Reply(json.dumps(_predictions()).replace('"cat"', '"\\ud800"').encode()),
     "the class name '\\ud800' is not valid Unicode"),
    (Reply(_huge_nesting()), "without a JSON body (RecursionError"),
    (_raw("HTTP/1.1 200 OK\nContent-Type: application/json\nContent-Length: 1000000000000\n"),
     "the response declares 1000000000000 bytes"),
    (_raw("HTTP/1.1 200 OK\nContent-Type: application/json\nTransfer-Encoding: chunked\n",
          b"zz\r\n{}\r\n"), "the HTTP response is broken (ChunkedEncodingError"),
    (_raw("HTTP/1.1 200 OK\nContent-Type: application/json\nContent-Encoding: gzip\nContent-Length: 9\n",
          b"not gzip!"), "the HTTP response is broken (ContentDecodingError"),
    (_raw("HTTP/1.1 302 Found\nLocation: http://example.invalid/\nContent-Length: 0\n"),
     "(UNKNOWN: HTTP 302: Found)"),
], ids=lambda v: _case_id(v) if isinstance(v, str) else "")
def test_malformed_rest_predictions_exit_3(reply, message, hostile_rest, image):
  _serve(hostile_rest, reply)
  line = assert_one_error(run_client("--rest", hostile_rest.url, "--model", "cifar10", image, image),
                          3, message)
  assert f"TF Serving at {hostile_rest.url}" in line


@pytest.mark.parametrize("version", ["abc", 1.5, -3, True, "-3", "2.0", 10**30])
def test_metadata_version_that_is_not_a_non_negative_integer_exits_3(version, hostile_rest, image):
  _serve(hostile_rest, _json(_predictions()), metadata=_json(_metadata(version=version)))
  assert_one_error(run_client("--rest", hostile_rest.url, "--model", "cifar10", image), 3,
                   "model_spec.version", "is not a non-negative integer")


def test_metadata_declaring_an_absurd_image_exits_3_before_any_resize(hostile_rest, image):
  body = _metadata()
  dims = body["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]["images"]
  dims["tensor_shape"]["dim"][1:3] = [{"size": "100000"}, {"size": "100000"}]
  _serve(hostile_rest, _json(_predictions()), metadata=_json(body))
  assert_one_error(run_client("--rest", hostile_rest.url, "--model", "cifar10", "--resize", image),
                   3, "takes images of 100000x100000 pixels with 3 channels: not an image")


def test_metadata_that_is_not_tf_servings_format_exits_3(hostile_rest, image):
  _serve(hostile_rest, _json(_predictions()), metadata=_json({"metadata": {"signature_def": [1]}}))
  assert_one_error(run_client("--rest", hostile_rest.url, "--model", "cifar10", image), 3,
                   "metadata.signature_def is a JSON array, not a JSON object")


def test_server_error_message_is_one_escaped_line(hostile_rest, image):
  _serve(hostile_rest, Reply(json.dumps({"error": "bad \x1b[2Jinput\x07\r\nTraceback"}).encode(), 400))
  line = assert_one_error(run_client("--rest", hostile_rest.url, "--model", "cifar10", image), 3,
                          "(INVALID_ARGUMENT: HTTP 400: bad \\x1b[2Jinput\\x07)")
  assert "\x1b" not in line and "\x07" not in line


def test_control_characters_in_class_names_are_printed_escaped(hostile_rest, image):
  hostile = ["\x1b[31mred\x1b[0m", "tab\there", "zero\u200bwidth"] + NAMES[3:]
  _serve(hostile_rest, _json(_predictions(n=1, class_names=hostile,
                                          probabilities=[0.5, 0.3, 0.15] + [0.05 / 7] * 7)))
  text = run_client("--rest", hostile_rest.url, "--model", "cifar10", image)
  assert text.returncode == 0 and text.stderr == "", text.stderr
  assert text.stdout == f"{image}: \\x1b[31mred\\x1b[0m 0.500, tab\\there 0.300, zero\\u200bwidth 0.150\n"
  as_json = run_client("--rest", hostile_rest.url, "--model", "cifar10", "--json", image)
  assert as_json.returncode == 0, as_json.stderr
  assert "\x1b" not in as_json.stdout and "\\u001b[31mred" in as_json.stdout  # JSON's own escape
  top = json.loads(as_json.stdout)["predictions"][0]["top_k"]
  assert [t["class"] for t in top] == hostile[:3]  # a JSON reader gets the names back exactly


@pytest.mark.parametrize("url, message", [
    ("http://", "No host supplied"),
    ("http://127.0.0.1:99999", "is not a usable URL"),
    ("http://[::1", "is not a usable URL"),
])
def test_unusable_rest_url_exits_2(url, message, image):
  assert_one_error(run_client("--rest", url, "--model", "cifar10", image), 2, message)


def test_tls_to_a_plain_http_server_exits_69_without_retrying(hostile_rest, image):
  _serve(hostile_rest, _json(_predictions()))
  url = hostile_rest.url.replace("http://", "https://")
  assert_one_error(run_client("--rest", url, "--model", "cifar10", image), 69,
                   f"TLS with {url} failed", "use http://")


def _png_header(width: int, height: int) -> bytes:
  """A PNG that declares width x height pixels and holds none: enough for Pillow to check its size."""
  def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
  ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
  return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [10_000, 20_000])  # Pillow warns above ~89 M pixels, raises above twice that
def test_decompression_bomb_is_bad_input_exit_2(side, hostile_rest, tmp_path):
  _serve(hostile_rest, _json(_predictions(n=1)))
  bomb = tmp_path / "bomb.png"
  bomb.write_bytes(_png_header(side, side))
  assert_one_error(run_client("--rest", hostile_rest.url, "--model", "cifar10", str(bomb)), 2,
                   f"{bomb} has {side * side} pixels", "decompression bomb")


def _closed_port() -> int:
  """A port on 127.0.0.1 that nothing listens on: the server is down."""
  import socket  # pylint: disable=import-outside-toplevel
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


@pytest.mark.parametrize("transport", ["--rest", "--grpc"])
def test_a_bad_file_is_named_before_the_server_is_asked_anything(transport, image, tmp_path):
  """Exit 2 naming the file, not 69 after three attempts at a server that is down."""
  port = _closed_port()
  server = f"http://127.0.0.1:{port}" if transport == "--rest" else f"127.0.0.1:{port}"
  text = tmp_path / "notes.txt"
  text.write_text("not an image")
  bomb = tmp_path / "bomb.png"
  bomb.write_bytes(_png_header(20_000, 20_000))
  for bad, message in ((str(tmp_path / "missing.png"), "missing.png: no such file"),
                       (str(tmp_path), "is a directory, not an image file"),
                       (str(text), "notes.txt is not an image (Pillow cannot decode it)"),
                       (str(bomb), "has 400000000 pixels")):
    assert_one_error(run_client(transport, server, "--model", "cifar10", image, bad), 2, message)


# ------------------------------------------------------------ hostile gRPC


def _tensor(values, dtype=None) -> tensor_pb2.TensorProto:
  return tf.make_tensor_proto(values, dtype=dtype)


def _grpc_predict(n=1, version=2, **outputs) -> predict_pb2.PredictResponse:
  response = predict_pb2.PredictResponse()
  response.model_spec.name = "cifar10"
  response.model_spec.version.value = version
  valid = {"probabilities": _tensor(np.array([PROBABILITIES] * n, np.float32)),
           "classes": _tensor(np.zeros(n, np.int64)),
           "class_names": _tensor(np.array([[s.encode() for s in NAMES]] * n, dtype=object))}
  for name, proto in {**valid, **outputs}.items():
    response.outputs[name].CopyFrom(proto)
  return response


def _grpc_metadata(version=2, packed: Optional[bytes] = None) -> get_model_metadata_pb2.GetModelMetadataResponse:
  response = get_model_metadata_pb2.GetModelMetadataResponse()
  response.model_spec.name = "cifar10"
  response.model_spec.version.value = version
  response.metadata["signature_def"].Pack(_signature_defs())
  if packed is not None:  # the right type name over bytes that do not parse as it
    response.metadata["signature_def"].value = packed
  return response


class _Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
  def __init__(self):
    self.metadata = _grpc_metadata()
    self.predict = _grpc_predict()

  def GetModelMetadata(self, request, context):  # pylint: disable=invalid-name
    return self.metadata

  def Predict(self, request, context):  # pylint: disable=invalid-name
    return self.predict


@pytest.fixture(scope="module")
def hostile_grpc():
  """A PredictionService on 127.0.0.1 answering with `servicer.metadata` and `servicer.predict`."""
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
  servicer = _Servicer()
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
  servicer.target = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
  server.start()
  yield servicer
  server.stop(grace=None)


def _compact(dtype, dims, **values) -> tensor_pb2.TensorProto:
  """A TensorProto in TF's compact form: few values for a large declared shape."""
  proto = tensor_pb2.TensorProto(dtype=dtype, **values)
  for size in dims:
    proto.tensor_shape.dim.add(size=size)
  return proto


@pytest.mark.parametrize("response, message", [
    (_grpc_predict(probabilities=_tensor(np.array(PROBABILITIES, np.float32))),
     "probabilities are float32 [10], not numbers [batch, classes]"),
    (_grpc_predict(probabilities=_tensor(np.array([["0.5"] * 10], dtype=object))),
     "probabilities are strings [1, 10]"),
    (_grpc_predict(classes=_tensor(np.array([True]))), "a tensor of dtype DT_BOOL"),
    (_grpc_predict(class_names=_tensor(np.array([[b"\xff\xfe"] + [b"x"] * 9], dtype=object))),
     "the class name b'\\xff\\xfe' is not UTF-8"),
    (_grpc_predict(probabilities=_compact(types_pb2.DT_FLOAT, [10**12], float_val=[0.1])),
     "a tensor of shape [1000000000000] (1000000000000 elements), more than the 100000"),
    (_grpc_predict(class_names=_compact(types_pb2.DT_STRING, [1, 10**9], string_val=[b"a"])),
     "more than the 100000 this request can need"),
    (_grpc_predict(probabilities=_compact(types_pb2.DT_FLOAT, [1, 10], tensor_content=b"\0" * 12)),
     "with 12 bytes of content, not 40"),
    (_grpc_predict(probabilities=_tensor(np.array([[np.nan] * 10], np.float32))), "NaN or infinity"),
    (_grpc_predict(version=-3), "the served version -3 is not a non-negative integer"),
], ids=lambda v: _case_id(v) if isinstance(v, str) else "")
def test_malformed_grpc_predictions_exit_3(response, message, hostile_grpc, image):
  hostile_grpc.metadata, hostile_grpc.predict = _grpc_metadata(), response
  assert_one_error(run_client("--grpc", hostile_grpc.target, "--model", "cifar10", image), 3,
                   f"TF Serving at {hostile_grpc.target} sent a malformed response", message)


@pytest.mark.parametrize("metadata, message", [
    (_grpc_metadata(version=-1), "model_spec.version '-1' is not a non-negative integer"),
    (_grpc_metadata(packed=b"\xff\xff\xff"), "the metadata's SignatureDefMap does not parse"),
], ids=["negative-version", "garbage-signature-defs"])
def test_malformed_grpc_metadata_exits_3(metadata, message, hostile_grpc, image):
  hostile_grpc.metadata, hostile_grpc.predict = metadata, _grpc_predict()
  assert_one_error(run_client("--grpc", hostile_grpc.target, "--model", "cifar10", image), 3, message)


def test_grpc_control_characters_in_class_names_are_printed_escaped(hostile_grpc, image):
  names = [b"\x1b]0;pwned\x07"] + [s.encode() for s in NAMES[1:]]
  hostile_grpc.metadata = _grpc_metadata()
  hostile_grpc.predict = _grpc_predict(class_names=_tensor(np.array([names], dtype=object)))
  proc = run_client("--grpc", hostile_grpc.target, "--model", "cifar10", "--top-k", "1", image)
  assert proc.returncode == 0 and proc.stderr == "", proc.stderr
  assert proc.stdout == f"{image}: \\x1b]0;pwned\\x07 0.550\n"


# ------------------------------------------------- the parsers, on any JSON

# Keys the parsers look for, so that generated bodies reach past the first check.
_KEYS = ["predictions", "probabilities", "classes", "class_names", "outputs", "error", "model_spec",
         "version", "name", "metadata", "signature_def", "serving_default", "inputs", "images",
         "dtype", "tensor_shape", "dim", "size", "unknown_rank"]
_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
_json_values = st.recursive(
    _scalars, lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=4), children, max_size=4),
    max_leaves=24)
# Near-valid predictions: the right structure, with values that may be wrong.
_numbers = st.floats(width=32) | st.integers(-2, 2)
_rows = st.integers(1, 3).flatmap(lambda k: st.fixed_dictionaries({
    "probabilities": st.lists(_numbers, min_size=k, max_size=k) | _json_values,
    "classes": st.integers(-1, k) | _json_values,
    "class_names": st.lists(st.text(max_size=3), min_size=k, max_size=k) | _json_values}))
_predict_bodies = _json_values | st.fixed_dictionaries({"predictions": st.lists(_rows, max_size=3)})
_dims = st.lists(st.fixed_dictionaries({"size": st.integers(-2, 40) | st.from_regex(r"-?[0-9]{1,3}", fullmatch=True)
                                        | _scalars}), max_size=5)
_spec = st.fixed_dictionaries({"dtype": st.sampled_from(["DT_UINT8", "DT_FLOAT"]) | _scalars,
                               "tensor_shape": st.fixed_dictionaries({"dim": _dims}) | _json_values})
_metadata_bodies = _json_values | st.fixed_dictionaries({
    "model_spec": st.fixed_dictionaries({"version": _scalars}),
    "metadata": st.fixed_dictionaries({"signature_def": st.fixed_dictionaries({"signature_def": st.fixed_dictionaries({
        "serving_default": st.fixed_dictionaries({"inputs": st.fixed_dictionaries({"images": _spec})})})})})})
_property = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                     suppress_health_check=[HealthCheck.too_slow])


@_property
@given(_predict_bodies, st.none() | st.integers(1, 3))
def test_predict_parser_returns_well_formed_outputs_or_raises_client_error(body, count):
  try:
    outputs = client_lib.parse_predict_response(body, count)
  except client_lib.ClientError as e:
    assert e.exit_code == 3
    return
  n, k = outputs.probabilities.shape
  assert outputs.probabilities.dtype == np.float32 and np.isfinite(outputs.probabilities).all()
  assert outputs.classes.dtype == np.int64 and outputs.classes.shape == (n,)
  assert ((0 <= outputs.classes) & (outputs.classes < k)).all()
  assert len(outputs.class_names) == n and all(len(row) == k for row in outputs.class_names)
  assert all(type(name) is str for row in outputs.class_names for name in row)
  assert count is None or n == count


@_property
@given(_metadata_bodies)
def test_metadata_parser_returns_well_formed_metadata_or_raises_client_error(body):
  try:
    metadata = client_lib.parse_metadata("cifar10", body)
    shape = metadata.image_shape()
  except client_lib.ClientError as e:
    assert e.exit_code == 3
    return
  assert metadata.version is None or (type(metadata.version) is int and metadata.version >= 0)
  for signature in metadata.signatures.values():
    for spec in [*signature.inputs.values(), *signature.outputs.values()]:
      assert isinstance(spec.dtype, str)
      assert spec.shape is None or all(d is None or (type(d) is int and d >= 0) for d in spec.shape)
  assert all(type(d) is int and d >= 1 for d in shape)


def test_valid_bodies_parse():
  """The property tests' premise: the parsers accept what TF Serving really sends."""
  outputs = client_lib.parse_predict_response(json.loads(json.dumps(_predictions())), 2)
  assert outputs.class_names == [NAMES, NAMES] and outputs.classes.tolist() == [0, 0]
  metadata = client_lib.parse_metadata("cifar10", METADATA)
  assert metadata.version == 2 and metadata.image_shape() == (32, 32, 3)
