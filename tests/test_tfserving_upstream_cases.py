"""TF Serving's own REST tests, ported to run against the stand-in's REST layer.

Each case cites the test it comes from in tensorflow/serving 2.19.1:
model_servers/http_rest_api_handler_test.cc (HttpRestApiHandlerTest, run on
a half_plus_two SavedModel: y = 0.5 * x + 2, version 123, label
"Version_Label") and util/json_tensor_test.cc (JsontensorTest, the JSON of
Predict requests: row and columnar formats, b64, errors). Only cases that
apply to Predict, status and metadata are ported (no Classify/Regress, which
the stand-in does not serve). The REST layer is called as http_server.cc
calls the handler (rest.handle: method, path, body), with no sockets.
Where upstream asserts a message with HasSubstr, so do these.
"""

import json
import types

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import meta_graph_pb2

from standins.tfserving import StandIn
from standins.tfserving import rest
from standins.tfserving import rules
from standins.tfserving.rules import Code
from standins.tfserving.rules import ServingError

MODEL = "saved_model_half_plus_two_2_versions"  # kTestModelName
VERSION = 123  # kTestModelVersion1
LABEL = "Version_Label"  # kTestModelVersionLabel


class _HalfPlusTwo(tf.Module):

  @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="x")])
  def serve(self, x):
    return {"y": x * 0.5 + 2.0}


@pytest.fixture(scope="module")
def core(tmp_path_factory):
  base = tmp_path_factory.mktemp("half_plus_two")
  module = _HalfPlusTwo()
  tf.saved_model.save(module, str(base / str(VERSION)), signatures={"serving_default": module.serve})
  standin = StandIn({MODEL: str(base)}, labels={MODEL: {LABEL: VERSION}})
  standin.models.reload_config(standin.config)
  yield standin.models
  standin.models.stop()


def _call(core, method, path, body=""):
  status, _, text = rest.handle(core, method, path, body.encode())
  return status, text


def _error(text):
  return json.loads(text)["error"]


# ------------------------------------------- http_rest_api_handler_test.cc


def test_k_path_regex():
  """HttpRestApiHandlerTest.kPathRegex."""
  assert rules.rest_route("/v1/models", None) == "api"
  assert rules.rest_route("/statuspage", None) is None
  assert rules.rest_route("/index", None) is None


@pytest.mark.parametrize("method, path, message", [
    ("GET", "/v1/foo", "Malformed request"),
    ("POST", "/v1/foo", "Malformed request"),
    ("GET", "/v1/models", "Missing model name"),
    ("GET", "/v1/models/debug/model_name", "Malformed request"),
    ("POST", "/v1/models", "Malformed request"),
    ("GET", "/v1/models/foo:predict", "Malformed request"),
    ("GET", "/v1/models/foo/version/50:predict", "Malformed request"),
    ("POST", "/v1/models/foo/version/50:regress", "Malformed request"),
    ("POST", "/v1/models/foo/versions/HELLO:regress", "Malformed request"),
    ("POST", f"/v1/models/foo/versions/{2**64 - 1}:regress", "Failed to convert version"),
    ("POST", "/v1/models/foo/metadata", "Malformed request"),
    ("POST", "/v1/models/foo/label/some_label:regress", "Malformed request"),
    ("POST", "/v1/models/foo/versions/50/labels/some_label:regress", "Malformed request"),
    ("POST", "/v1/models/foo/versions/some_label:regress", "Malformed request"),
])
def test_unsupported_api_calls(core, method, path, message):
  """HttpRestApiHandlerTest.UnsupportedApiCalls: INVALID_ARGUMENT (400) each."""
  status, text = _call(core, method, path)
  assert status == 400 and message in _error(text)


@pytest.mark.parametrize("path", ["/v1/models/foo:predict", "/v1/models/foo/versions/50:predict",
                                  f"/v1/models/{MODEL}99:predict"])
def test_predict_model_name_version_errors(core, path):
  """HttpRestApiHandlerTest.PredictModelNameVersionErrors: NOT_FOUND (404)."""
  status, _ = _call(core, "POST", path, '{ "instances": [1] }')
  assert status == 404


@pytest.mark.parametrize("path, body, message", [
    (f"/v1/models/{MODEL}:predict", "", "JSON Parse error: The document is empty"),
    (f"/v1/models/{MODEL}:predict", "instances = [1, 2]", "JSON Parse error: Invalid value"),
    (f"/v1/models/{MODEL}:predict", '{ "instances": ["x", "y"] }', "not of expected type: float"),
    (f"/v1/models/{MODEL}/labels/Version_Nonexistent:predict", '{ "instances": ["x", "y"] }',
     "Unrecognized servable version label"),
    (f"/v1/models/{MODEL}:predict", '{ "signature_name": 100 }',
     "'signature_name' key must be a string value."),
])
def test_predict_request_errors(core, path, body, message):
  """HttpRestApiHandlerTest.PredictRequestErrors: INVALID_ARGUMENT (400)."""
  status, text = _call(core, "POST", path, body)
  assert status == 400 and message in _error(text)


@pytest.mark.parametrize("path, body, expected", [
    (f"/v1/models/{MODEL}:predict", '{"instances": [[1.0, 2.0], [3.0, 4.0]]}',
     {"predictions": [[2.5, 3.0], [3.5, 4.0]]}),
    (f"/v1/models/{MODEL}/versions/{VERSION}:predict", '{"instances": [1.0, 2.0]}',
     {"predictions": [2.5, 3.0]}),
    (f"/v1/models/{MODEL}/labels/{LABEL}:predict", '{"instances": [1.0, 2.0]}',
     {"predictions": [2.5, 3.0]}),
    (f"/v1/models/{MODEL}/versions/{VERSION}:predict",
     '{"signature_name": "serving_default", "instances": [3.0, 4.0]}', {"predictions": [3.5, 4.0]}),
    (f"/v1/models/{MODEL}/versions/{VERSION}:predict",
     '{"signature_name": "serving_default", "inputs": [3.0, 4.0]}', {"outputs": [3.5, 4.0]}),
])
def test_predict(core, path, body, expected):
  """HttpRestApiHandlerTest.Predict: row and columnar answers, Content-Type application/json."""
  status, content_type, text = rest.handle(core, "POST", path, body.encode())
  assert (status, content_type) == (200, "application/json")
  assert json.loads(text) == expected


@pytest.mark.parametrize("path", [f"/v1/models/{MODEL}", f"/v1/models/{MODEL}/versions/{VERSION}",
                                  f"/v1/models/{MODEL}/labels/{LABEL}"])
def test_get_status(core, path):
  """HttpRestApiHandlerTest.GetStatus: every field printed, status OK included."""
  status, text = _call(core, "GET", path)
  assert status == 200
  assert json.loads(text) == {"model_version_status": [
      {"version": str(VERSION), "state": "AVAILABLE",
       "status": {"error_code": "OK", "error_message": ""}}]}


def test_get_model_metadata(core):
  """HttpRestApiHandlerTest.GetModelMetadata (its expected JSON file's shape, not its bytes:
  the SavedModel here is re-made with tf.saved_model.save)."""
  for path in (f"/v1/models/{MODEL}/metadata", f"/v1/models/{MODEL}/versions/{VERSION}/metadata"):
    status, text = _call(core, "GET", path)
    assert status == 200
    metadata = json.loads(text)
    assert metadata["model_spec"] == {"name": MODEL, "signature_name": "", "version": str(VERSION)}
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert signature["method_name"] == "tensorflow/serving/predict"


# ------------------------------------------------------ json_tensor_test.cc


def _servable(infomap: dict[str, str]):
  """A servable whose serving_default signature has these inputs (name -> "DT_INT32", ...)."""
  signature = meta_graph_pb2.SignatureDef()
  for name, dtype in infomap.items():
    text_format.Parse(f"dtype: {dtype}", signature.inputs[name])

  def lookup(name, rest=False):
    del rest
    if name not in ("", "serving_default"):
      raise ServingError(Code.INVALID_ARGUMENT, "no such signature")
    return "serving_default", signature
  return types.SimpleNamespace(signature=lookup)


def _fill(infomap, body):
  """FillPredictRequestFromJson: (inputs, row format?)."""
  servable = _servable(infomap)
  _, _, inputs, row = rest._parse_predict(lambda: servable, body.encode())  # pylint: disable=protected-access
  return inputs, row


def test_single_unnamed_tensor():
  """JsontensorTest.SingleUnnamedTensor."""
  inputs, row = _fill({"default": "DT_INT32"}, '{"instances": [[1,2],[3,4],[5,6]]}')
  assert row and inputs["default"].dtype == np.int32
  np.testing.assert_array_equal(inputs["default"], [[1, 2], [3, 4], [5, 6]])


def test_single_unnamed_tensor_base64_scalars():
  """JsontensorTest.SingleUnnamedTensorBase64Scalars."""
  inputs, row = _fill({"default": "DT_STRING"},
                      '{"instances": [ { "b64" : "aGVsbG8=" }, { "b64": "d29ybGQ=" } ]}')
  assert row and inputs["default"].shape == (2,) and list(inputs["default"]) == [b"hello", b"world"]


def test_single_unnamed_tensor_base64_lists():
  """JsontensorTest.SingleUnnamedTensorBase64Lists."""
  inputs, _ = _fill({"default": "DT_STRING"},
                    '{"instances": [ [{ "b64" : "aGVsbG8=" }], [{ "b64": "d29ybGQ=" }] ]}')
  assert inputs["default"].shape == (2, 1) and inputs["default"].ravel().tolist() == [b"hello", b"world"]


def test_single_named_tensor_base64():
  """JsontensorTest.SingleNamedTensorBase64."""
  inputs, _ = _fill({"default": "DT_STRING"},
                    '{"instances": [{"default": [ [{ "b64" : "aGVsbG8=" }], [{ "b64": "d29ybGQ=" }] ]}]}')
  assert inputs["default"].shape == (1, 2, 1)


def test_multiple_named_tensor():
  """JsontensorTest.MultipleNamedTensor (its first request: one instance of four named inputs)."""
  inputs, row = _fill({"int_tensor": "DT_INT32", "str_tensor": "DT_STRING",
                       "float_tensor": "DT_FLOAT", "dbl_tensor": "DT_DOUBLE"}, """
    {"instances": [{"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"],
                    "float_tensor": [1.0, NaN], "dbl_tensor": [Infinity, 3.0]}]}""")
  assert row
  assert inputs["int_tensor"].shape == (1, 3, 2) and inputs["str_tensor"].shape == (1, 2)
  assert np.isnan(inputs["float_tensor"][0, 1]) and inputs["dbl_tensor"].dtype == np.float64
  assert np.isinf(inputs["dbl_tensor"][0, 0])


def test_single_unnamed_tensor_columnar_format():
  """JsontensorTest.SingleUnnamedTensorColumnarFormat."""
  inputs, row = _fill({"int_tensor": "DT_INT32"}, '{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]]}}')
  assert not row and inputs["int_tensor"].shape == (1, 3, 2)


@pytest.mark.parametrize("body, message", [
    ("", "document is empty"),
    ('{"signature_name": 5, "instances": [[1,2],[3,4],[5,6,7]]}', "must be a string value"),
    ('{"instances": [[1,2],[3,4],[5,6,7]], "inputs": [[1,2],[3,4],[5,6,7]]}', "Not formatted correctly"),
    ('{"instances": [[1,2],[3,4],[5,6,7]]}', "Expecting tensor size"),
    ('{"instances": [[1,2],[3,4],[[5,6]]]}', "Expecting shape"),
    ('{"instances": [1, [1]]}', "Expecting shape"),
    ('{"instances": [[1,2],["a", "b"]]}', "not of expected type"),
])
def test_single_unnamed_tensor_errors(body, message):
  """JsontensorTest.SingleUnnamedTensorErrors: INVALID_ARGUMENT each."""
  with pytest.raises(ServingError) as e:
    _fill({"default": "DT_INT32"}, body)
  assert e.value.code == Code.INVALID_ARGUMENT and message in e.value.message


@pytest.mark.parametrize("infomap, body, message", [
    ({"int_tensor": "DT_INT32", "str_tensor": "DT_STRING"}, """{"instances": [
        {"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"]},
        {"int_tensor": [[[7,8],[9,0],[1,2]]], "str_tensor": ["baz", "bat"]}]}""", "Expecting shape"),
    ({"int_tensor": "DT_INT32", "str_tensor": "DT_STRING"}, """{"instances": [
        {"int_tensor": [[1,2],[3,4],[5,6],[7,8]], "str_tensor": ["foo", "bar"]},
        {"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"]}]}""",
     "Expecting tensor size"),
    ({"int_tensor": "DT_INT32", "str_tensor": "DT_STRING"}, """{"instances": [
        {"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"]},
        [1, 20, 30],
        {"int_tensor": [[[7,8],[9,0],[1,2]]], "str_tensor": ["baz", "bat"]}]}""",
     "Expecting object but got list"),
    ({"str_tensor": "DT_STRING"}, """{"instances": [["baz", "bar"], {"str_tensor": ["baz", "bat"]}]}""",
     "Expecting value/list but got object"),
])
def test_multiple_named_tensor_errors(infomap, body, message):
  """JsontensorTest.MultipleNamedTensorErrors: INVALID_ARGUMENT each."""
  with pytest.raises(ServingError) as e:
    _fill(infomap, body)
  assert e.value.code == Code.INVALID_ARGUMENT and message in e.value.message
