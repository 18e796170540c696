"""serving/client/ over real sockets, against the TF Serving protocol stand-in.

The stand-in (tests/standins/tfserving) serves real exported SavedModels over
TF Serving's REST and gRPC protocols; the real model server cannot run here.
Exit-code tests run `python -m serving.client` as a subprocess, as a user would.
"""

import io
import json
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import requests
import tensorflow as tf
from PIL import Image

from conftest import REPO
from ports import refusing_socket
from serving import client as client_lib
from serving.client import PredictClient
from standins.tfserving import StandIn
from trainer.data import pipeline as data
from trainer import export
from trainer import models as model_lib
from trainer.data import synthetic

CIFAR = data.DatasetInfo("cifar10", (32, 32, 3), synthetic.CLASS_NAMES["cifar10"], 10, 10)
MNIST = data.DatasetInfo("mnist", (28, 28, 1), tuple(f"digit {i}" for i in range(10)), 10, 10)
# Keras's unseeded initialisers give an untrained model ~0.1 for every class,
# ~1e-3 apart: a float round trip through REST or gRPC could flip their order
# or their 3-decimal rounding. Seeded weights with the logits kernel scaled by
# this spread the softmax (the top class gets 0.35-0.9 on the test images);
# tests that compare order or printed digits still assert the margin
# (_assert_separated).
LOGITS_SCALE = 4.0
# ResNet-20's pooled features are larger: half the scale gives the same spread.
# Its weights' seed is its version + 1, the first that separates its top
# classes on the test images (checked here: the smallest gap is 0.012).
RESNET_LOGITS_SCALE = 2.0


def _seeded_model(info, seed, architecture="tutorial"):
  """A model for `info` with weights that are a pure function of `seed`.

  He-normal kernels (std sqrt(2 / fan_in)) keep the ReLU activations at unit
  scale layer after layer; 1-D weights keep their initial values (biases and
  BatchNorm betas and moving means 0, gammas and moving variances 1).
  ResNet-20's moving statistics are then set from a batch of images, as
  training would, so that its activations stay at unit scale too.
  """
  keras_model = model_lib.create_model(architecture, info.image_shape, 10)
  rng = np.random.default_rng(seed)
  keras_model.set_weights([
      w if w.ndim == 1
      else rng.normal(0.0, np.sqrt(2.0 / np.prod(w.shape[:-1])), w.shape).astype(np.float32)
      for w in keras_model.get_weights()])
  if architecture == "resnet20":
    images = _images(info, 64, seed=seed)
    # One compiled pass, called 60 times: eagerly, the 60 passes took 10.7-13.1 s
    # of the module's set-up on an idle 2-core AMD EPYC; as a graph, tracing
    # included, 3.2-3.5 s.
    update_statistics = tf.function(lambda batch: keras_model(batch, training=True))
    for _ in range(60):  # momentum 0.9: 0.9^60 of the initial statistics remain, 0.2%
      update_statistics(images)
  logits = keras_model.get_layer("logits")
  kernel, bias = logits.get_weights()
  logits.set_weights([kernel * (LOGITS_SCALE if architecture == "tutorial" else RESNET_LOGITS_SCALE),
                      bias])
  return keras_model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  """Exported models: cifar10 versions 1 and 2 (different weights), mnist version 1, and
  ResNet-20 on CIFAR-10 as resnet20 version 1."""
  root = tmp_path_factory.mktemp("models")
  built = {}
  for name, info, versions, architecture in (("cifar10", CIFAR, (1, 2), "tutorial"),
                                             ("mnist", MNIST, (1,), "tutorial"),
                                             ("resnet20", CIFAR, (1,), "resnet20")):
    for version in versions:
      seed = version + (1 if architecture == "resnet20" else 0)
      keras_model = _seeded_model(info, seed=seed, architecture=architecture)
      export.export(keras_model, info, architecture, [str(root / name)])
      built[(name, version)] = keras_model
  return str(root), built


@pytest.fixture(scope="module")
def server(models):
  root, _ = models
  standin = StandIn({name: os.path.join(root, name) for name in ("cifar10", "mnist", "resnet20")},
                    labels={"cifar10": {"stable": 1, "canary": 2}}).start()
  yield standin
  standin.stop()


def _expected(models, name, version, images):
  return tf.nn.softmax(models[1][(name, version)](images)).numpy()


def _assert_separated(probabilities, k, decimals=None):
  """Asserts the premise of comparing the top `k` classes across a round trip.

  The k+1 highest probabilities of each row must be more than 1e-3 apart, so
  that which classes are the top k, and their order, cannot depend on float
  noise (~1e-7). With `decimals`, none of the top k may lie within 1e-5 of a
  rounding boundary, so that printing it cannot depend on that noise either.
  """
  top = -np.sort(-probabilities, axis=-1)[:, :k + 1]
  assert (top[:, :-1] - top[:, 1:]).min() > 1e-3, f"near-tied probabilities:\n{top}"
  if decimals is not None:
    scaled = top[:, :k] * 10**decimals
    assert np.abs(scaled % 1 - 0.5).min() > 1e-5 * 10**decimals, (
        f"a probability within 1e-5 of a {decimals}-decimal rounding boundary:\n{top}")


def _images(info, n, seed=0):
  images, _ = synthetic.make_arrays(n, info.image_shape, seed=seed)
  return images


def _write_png(path, pixels):
  Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(path)
  return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """Five 32x32 RGB PNGs and their pixels."""
  root = tmp_path_factory.mktemp("images")
  images = _images(CIFAR, 5, seed=3)
  return [_write_png(root / f"img{i}.png", image) for i, image in enumerate(images)], images


def run_client(args, timeout=120):
  return subprocess.run([sys.executable, "-m", "serving.client", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)


def _error_line(proc):
  """The stderr's one `error: ` line (warnings about retries may precede it)."""
  lines = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
  assert len(lines) == 1, proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == lines[0], proc.stderr
  return lines[0]


# ------------------------------------------------------------- predictions


@pytest.mark.parametrize("name, latest", [("cifar10", 2), ("resnet20", 1)])
@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_predictions_match_the_in_memory_model(protocol, name, latest, server, models):
  target = server.rest_url if protocol == "rest" else server.grpc_target
  images = _images(CIFAR, 7)
  with getattr(PredictClient, protocol)(target, name) as client:
    meta = client.metadata()
    assert meta.version == latest and meta.image_shape() == (32, 32, 3)
    result = client.predict(images)
  expected = _expected(models, name, latest, images)  # the latest version by default
  _assert_separated(expected, 3)
  np.testing.assert_allclose(result.probabilities, expected, atol=1e-5)
  np.testing.assert_array_equal(result.classes, expected.argmax(-1))
  assert result.class_names[0] == list(CIFAR.class_names)
  for row, probs in zip(result.top_k(3), expected):
    order = np.argsort(-probs)[:3]
    assert [name for name, _ in row] == [CIFAR.class_names[i] for i in order]
    assert [p for _, p in row] == pytest.approx(probs[order].tolist(), abs=1e-5)
  assert result.version == (latest if protocol == "grpc" else None)  # REST responses name no version


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_versions_and_labels_select_the_model(protocol, server, models):
  target = server.rest_url if protocol == "rest" else server.grpc_target
  images = _images(CIFAR, 3)
  # The versions must answer differently, or serving the wrong one would pass.
  assert np.abs(_expected(models, "cifar10", 1, images) - _expected(models, "cifar10", 2, images)).max() > 0.1
  factory = getattr(PredictClient, protocol)
  for kwargs, version in (({"version": 1}, 1), ({"label": "stable"}, 1), ({"label": "canary"}, 2)):
    with factory(target, "cifar10", **kwargs) as client:
      assert client.metadata().version == version
      np.testing.assert_allclose(client.predict(images).probabilities,
                                 _expected(models, "cifar10", version, images), atol=1e-5)


def test_single_channel_model(server, models):
  images = _images(MNIST, 4)
  with PredictClient.rest(server.rest_url, "mnist") as client:
    assert client.metadata().image_shape() == (28, 28, 1)
    np.testing.assert_allclose(client.predict(images).probabilities,
                               _expected(models, "mnist", 1, images), atol=1e-5)


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_cli_prints_top_k_per_file(protocol, server, models, files):
  paths, images = files
  target = ["--rest", server.rest_url] if protocol == "rest" else ["--grpc", server.grpc_target]
  proc = run_client([*target, "--model", "cifar10", "--top-k", "2", *paths[:3]])
  assert proc.returncode == 0, proc.stderr
  assert proc.stderr == ""
  expected = _expected(models, "cifar10", 2, images[:3])
  _assert_separated(expected, 2, decimals=3)  # so the exact text below is not float noise
  lines = proc.stdout.splitlines()
  assert len(lines) == 3
  for path, line, probs in zip(paths, lines, expected):
    order = np.argsort(-probs)[:2]
    assert line == f"{path}: " + ", ".join(f"{CIFAR.class_names[i]} {probs[i]:.3f}" for i in order)


def test_cli_json_over_several_requests(server, models, files):
  paths, images = files
  proc = run_client(["--rest", server.rest_url, "--model", "cifar10", "--label", "stable",
                     "--batch-size", "2", "--top-k", "10", "--json", *paths])
  assert proc.returncode == 0, proc.stderr
  out = json.loads(proc.stdout)
  assert out["model"] == "cifar10" and out["version"] == 1 and out["signature"] == "serving_default"
  expected = _expected(models, "cifar10", 1, images)
  _assert_separated(expected, 1)
  assert [p["file"] for p in out["predictions"]] == paths  # 5 files in 3 requests, in order
  for prediction, probs in zip(out["predictions"], expected):
    got = {t["class"]: t["probability"] for t in prediction["top_k"]}
    assert got == pytest.approx(dict(zip(CIFAR.class_names, probs.tolist())), abs=1e-5)
    assert prediction["top_k"][0]["class"] == CIFAR.class_names[probs.argmax()]
    listed = [t["probability"] for t in prediction["top_k"]]
    assert listed == sorted(listed, reverse=True)  # best first, by the numbers it prints


def test_cli_encoded_sends_file_bytes(server, models, files, tmp_path):
  paths, images = files
  jpeg = str(tmp_path / "photo.jpg")
  Image.fromarray(images[0]).save(jpeg, quality=95)
  # A phone's JPEG with a second picture, which Pillow calls MPO: it was refused (exit 2).
  mpo = str(tmp_path / "phone.jpg")
  Image.fromarray(images[0]).save(mpo, format="MPO", quality=95, save_all=True,
                                  append_images=[Image.fromarray(images[2])])
  assert Image.open(mpo).format == "MPO"
  proc = run_client(["--rest", server.rest_url, "--model", "cifar10", "--encoded", "--json",
                     paths[1], jpeg, mpo])
  assert proc.returncode == 0, proc.stderr
  out = json.loads(proc.stdout)
  assert out["signature"] == "serving_encoded"
  expected = _expected(models, "cifar10", 2, images[1:2])[0]  # PNG is lossless: same pixels
  assert out["predictions"][0]["top_k"][0]["probability"] == pytest.approx(expected.max(), abs=1e-5)
  assert len(out["predictions"][1]["top_k"]) == 3
  # The server decodes the MPO's first picture: the JPEG's, not the appended one.
  assert out["predictions"][2]["top_k"] == out["predictions"][1]["top_k"]


def test_grpc_encoded_matches_pixels(server, files):
  paths, images = files
  encoded = [open(p, "rb").read() for p in paths[:2]]
  with PredictClient.grpc(server.grpc_target, "cifar10") as client:
    by_bytes = client.predict_encoded(encoded)
    by_pixels = client.predict(images[:2])
  assert by_bytes.signature == "serving_encoded"
  np.testing.assert_allclose(by_bytes.probabilities, by_pixels.probabilities, atol=1e-6)


def test_resize_converts_only_when_asked(server, tmp_path):
  big = _write_png(tmp_path / "big.png", _images(CIFAR, 1)[0].repeat(2, 0).repeat(2, 1))  # 64x64
  grey = _write_png(tmp_path / "grey.png", _images(MNIST, 1)[0][:, :, :1].repeat(2, 0)[:32, :])
  for path, what in ((big, "64x64 pixels with 3 channels (RGB)"), (grey, "28x32 pixels with 1 channel (L)")):
    proc = run_client(["--rest", server.rest_url, "--model", "cifar10", path])
    assert proc.returncode == 2
    line = _error_line(proc)
    assert f"{path} is {what}, but model 'cifar10' takes 32x32 pixels with 3 channels" in line
    assert "pass --resize" in line
    resized = run_client(["--rest", server.rest_url, "--model", "cifar10", "--resize", path])
    assert resized.returncode == 0, resized.stderr
    assert resized.stdout.startswith(f"{path}: ")


# ---------------------------------------------------------------- errors


def test_missing_and_non_image_files_exit_2(server, files, tmp_path):
  paths, _ = files
  text = tmp_path / "notes.txt"
  text.write_text("not an image")
  for bad, message in ((str(tmp_path / "missing.png"), "missing.png: no such file"),
                       (str(text), "notes.txt is not an image (Pillow cannot decode it)")):
    proc = run_client(["--rest", server.rest_url, "--model", "cifar10", paths[0], bad])
    assert proc.returncode == 2, proc.stderr
    assert message in _error_line(proc)
    assert proc.stdout == ""  # nothing is sent when any file is bad


@pytest.mark.parametrize("args, message", [
    (["--model", "cifar10", "--top-k", "0"], "argument --top-k: 0 must be > 0"),
    (["--model", "cifar10", "--timeout", "soon"], "argument --timeout: 'soon' is not a number"),
    (["--model", "cifar10", "--version", "1", "--label", "stable"], "not allowed with argument"),
    (["--model", "cifar10", "--grpc", "http://127.0.0.1:8500"], "not allowed with argument"),
    (["--model", "cifar10", "--retry-backoff-s", "0"], "argument --retry-backoff-s: 0 must be > 0"),
    # time.sleep(inf) raised OverflowError (a traceback) at the first retry.
    (["--model", "cifar10", "--retry-backoff-s", "inf"],
     "argument --retry-backoff-s: inf must be a finite number of seconds"),
    (["--model", "cifar10", "--timeout", "inf"], "argument --timeout: inf must be a finite number"),
])
def test_bad_flags_exit_2(args, message, server, files):
  proc = run_client(["--rest", server.rest_url, *args, files[0][0]])
  assert proc.returncode == 2
  assert message in _error_line(proc)


def test_grpc_target_must_not_be_a_url(files):
  proc = run_client(["--grpc", "http://127.0.0.1:8500", "--model", "cifar10", files[0][0]])
  assert proc.returncode == 2
  assert "is not HOST:PORT" in _error_line(proc)


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_unknown_model_or_version_is_not_found_exit_3(protocol, server, files):
  target = ["--rest", server.rest_url] if protocol == "rest" else ["--grpc", server.grpc_target]
  cases = [(["--model", "cifar10", "--version", "7"], "Servable not found for request: Specific(cifar10, 7)")]
  if protocol == "rest":  # one gRPC subprocess is enough: each one imports TensorFlow
    cases.append((["--model", "nope"], "Servable not found for request: Latest(nope)"))
  for args, server_message in cases:
    proc = run_client([*target, *args, files[0][0]])
    assert proc.returncode == 3, proc.stderr
    line = _error_line(proc)
    assert "(NOT_FOUND: " in line and server_message in line
    assert "warning" not in proc.stderr  # NOT_FOUND is never retried


def test_unknown_label_is_the_servers_invalid_argument_exit_3(server, files):
  proc = run_client(["--rest", server.rest_url, "--model", "cifar10", "--label", "beta", files[0][0]])
  assert proc.returncode == 3
  line = _error_line(proc)
  assert "(INVALID_ARGUMENT: HTTP 400: Unrecognized servable version label: beta)" in line
  assert "Check --label" in line


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_server_invalid_argument_passes_the_models_message_through(protocol, server, tmp_path):
  """A wrong-size encoded image sent anyway: the SavedModel's own message comes back."""
  buffer = io.BytesIO()
  Image.new("RGB", (40, 40)).save(buffer, format="PNG")
  target = server.rest_url if protocol == "rest" else server.grpc_target
  with getattr(PredictClient, protocol)(target, "cifar10") as client:
    with pytest.raises(client_lib.RequestRejected) as e:
      client.predict_encoded([buffer.getvalue()])
  assert e.value.code == "INVALID_ARGUMENT" and e.value.exit_code == 3
  assert "each encoded image must be 32x32 pixels" in e.value.server_message
  assert "each encoded image must be 32x32 pixels" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_server_down_exits_69_after_three_attempts(protocol, files):
  with refusing_socket() as nothing_listens:
    port = nothing_listens.getsockname()[1]
    target = ["--rest", f"http://127.0.0.1:{port}"] if protocol == "rest" else ["--grpc", f"127.0.0.1:{port}"]
    started = time.time()
    proc = run_client([*target, "--model", "cifar10", files[0][0]])
  assert proc.returncode == 69, proc.stderr
  line = _error_line(proc)
  assert "could not be reached (UNAVAILABLE" in line and "after 3 attempts" in line
  assert proc.stderr.count("warning: ") == 2  # retried twice, 0.5 s then 1 s apart
  if protocol == "rest":
    assert "connection refused" in line
    assert time.time() - started < 20


class _SilentServer:
  """A TCP socket that accepts connections and never answers."""

  def __enter__(self):
    self.sock = socket.socket()
    self.sock.bind(("127.0.0.1", 0))
    self.sock.listen(8)
    self.port = self.sock.getsockname()[1]
    self.accepted = []
    threading.Thread(target=self._accept, daemon=True).start()
    return self

  def _accept(self):
    while True:
      try:
        self.accepted.append(self.sock.accept()[0])
      except OSError:
        return

  def __exit__(self, *exc):
    self.sock.close()
    for conn in self.accepted:
      conn.close()


def test_timeout_exits_69_without_retrying(files):
  with _SilentServer() as silent:
    started = time.time()
    proc = run_client(["--rest", f"http://127.0.0.1:{silent.port}", "--model", "cifar10",
                       "--timeout", "0.5", files[0][0]])
    elapsed = time.time() - started
  assert proc.returncode == 69
  line = _error_line(proc)
  assert "did not answer (DEADLINE_EXCEEDED: no answer within 0.5 s)" in line
  assert "warning" not in proc.stderr and elapsed < 10


def test_grpc_timeout_is_deadline_exceeded():
  with _SilentServer() as silent:
    with PredictClient.grpc(f"127.0.0.1:{silent.port}", "cifar10", timeout_s=0.5) as client:
      started = time.time()
      with pytest.raises(client_lib.ServerUnavailable) as e:
        client.metadata()
  assert e.value.code == "DEADLINE_EXCEEDED" and e.value.exit_code == 69
  assert time.time() - started < 5


class _Lines:
  """A subprocess's text pipe, read on a thread so that waiting for output has a deadline.

  `pipe.readline()` blocks for as long as the process neither writes nor
  exits: a hung client would hang the whole test run.
  """

  def __init__(self, pipe):
    self.seen = ""  # the lines taken so far
    self._eof = False
    self._queue = queue.Queue()
    threading.Thread(target=self._read, args=(pipe,), daemon=True).start()

  def _read(self, pipe):
    for line in pipe:
      self._queue.put(line)
    self._queue.put(None)  # end of file

  def _take(self, timeout_s):
    try:
      line = self._queue.get(timeout=max(0.0, timeout_s))
    except queue.Empty:
      pytest.fail(f"no output within {timeout_s:.0f} s; so far: {self.so_far()!r}")
    self._eof = line is None
    self.seen += line or ""
    return line

  def so_far(self) -> str:
    """Everything read so far, without waiting."""
    while not self._eof and not self._queue.empty():
      self._take(0)
    return self.seen

  def next(self, timeout_s: float) -> str:
    """The next line; fails the test with the output so far if none comes in time."""
    line = None if self._eof else self._take(timeout_s)
    if line is None:
      pytest.fail(f"the pipe closed; the output was: {self.seen!r}")
    return line

  def rest(self, timeout_s: float) -> str:
    """The lines up to end of file, which must come within timeout_s."""
    start, deadline = len(self.seen), time.monotonic() + timeout_s
    while not self._eof:
      self._take(deadline - time.monotonic())
    return self.seen[start:]


def test_cli_retries_until_the_server_starts_listening(server, files):
  """The first attempt is refused; the server starts during the backoff; the retry succeeds.

  The port is held by a bound socket that does not listen, so the first
  attempt is refused for certain; the late server then listen()s on that very
  socket. --retry-backoff-s 3 gives the test 3 s, rather than the default
  0.5 s, for that one step after it reads the warning.
  """
  late = StandIn({}, models=server.models)
  with refusing_socket() as sock:
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving.client", "--rest", f"http://127.0.0.1:{sock.getsockname()[1]}",
         "--model", "cifar10", "--retry-backoff-s", "3", files[0][0]], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr = _Lines(proc.stderr)
    try:
      first = stderr.next(timeout_s=60)  # written once the first attempt has failed
      assert first.startswith("warning: ") and "UNAVAILABLE (connection refused)" in first, first
      assert "retrying in 3 s (attempt 2 of 3)" in first
      late.start(grpc_port=None, rest_socket=sock)
      try:
        proc.wait(timeout=60)
      except subprocess.TimeoutExpired:
        pytest.fail(f"the client did not exit within 60 s; its stderr: {stderr.so_far()!r}")
      rest = stderr.rest(timeout_s=10)
      stdout = proc.stdout.read()
    finally:
      proc.kill()
      proc.wait()
      proc.stdout.close()
      late.stop()
  assert proc.returncode == 0, stderr.seen
  assert rest == ""  # the second attempt succeeded
  assert stdout.startswith(f"{files[0][0]}: ")


def test_grpc_retries_until_the_server_starts_listening(server):
  """The same over gRPC, in-process: the late server starts from the retry warning.

  The client logs the warning and only then sleeps, so a log handler that
  starts the server puts it before the retry, whatever the timing.
  """
  late = StandIn({}, models=server.models)
  warnings = []
  with refusing_socket() as placeholder:
    port = placeholder.getsockname()[1]

    class StartOnFirstWarning(logging.Handler):
      def emit(self, record):
        warnings.append(record.getMessage())
        if len(warnings) == 1:
          late.start(rest_port=None, grpc_port=port)  # binds beside the placeholder

    handler = StartOnFirstWarning(level=logging.WARNING)
    client_lib.log.addHandler(handler)
    try:
      with PredictClient.grpc(f"127.0.0.1:{port}", "cifar10") as client:
        assert client.metadata().version == 2
    finally:
      client_lib.log.removeHandler(handler)
      late.stop()
  assert len(warnings) == 1, warnings  # refused once, then the retry succeeded
  assert "is UNAVAILABLE (" in warnings[0] and "refused" in warnings[0].lower(), warnings[0]
  assert "retrying in 0.5 s (attempt 2 of 3)" in warnings[0]


# ------------------------------------------------------- protocol details


def test_tensor_protos_round_trip_through_tensorflow():
  """The client's TensorProto codec agrees with TensorFlow's own, both ways."""
  arrays = [np.arange(24, dtype=np.uint8).reshape(2, 3, 4), np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3),
            np.array([[1, -2], [3, 2**40]], dtype=np.int64), np.array([b"a", b"\x00\xff"], dtype=object)]
  for array in arrays:
    np.testing.assert_array_equal(tf.make_ndarray(client_lib.to_tensor_proto(array)), array)
    decoded = client_lib.to_numpy(tf.make_tensor_proto(array))  # tensor_content for numbers
    assert decoded.dtype == array.dtype
    np.testing.assert_array_equal(decoded, array)
  compact = tf.make_tensor_proto(np.float32(0.5), shape=[2, 2])  # one value, repeated
  np.testing.assert_array_equal(client_lib.to_numpy(compact), np.full((2, 2), 0.5, np.float32))


def test_standin_rest_formats_agree(server):
  """Row ("instances") and columnar ("inputs") requests, and model status, as TF Serving."""
  images = _images(CIFAR, 2)
  url = f"{server.rest_url}/v1/models/cifar10"
  row = requests.post(f"{url}:predict", json={"instances": images.tolist()}, timeout=30).json()
  named = requests.post(f"{url}/versions/2:predict",
                        json={"instances": [{"images": i.tolist()} for i in images]}, timeout=30).json()
  columnar = requests.post(f"{url}:predict", json={"signature_name": "serving_default",
                                                   "inputs": {"images": images.tolist()}}, timeout=30).json()
  assert [p["classes"] for p in row["predictions"]] == columnar["outputs"]["classes"]
  assert row == named
  np.testing.assert_allclose([p["probabilities"] for p in row["predictions"]],
                             columnar["outputs"]["probabilities"], atol=1e-6)
  status = requests.get(url, timeout=30)  # k8s/serving.yaml's readiness probe
  assert status.status_code == 200
  assert [(s["version"], s["state"]) for s in status.json()["model_version_status"]] == [
      ("2", "AVAILABLE"), ("1", "AVAILABLE")]
  missing = requests.get(f"{server.rest_url}/v1/models/nope", timeout=30)
  assert missing.status_code == 404 and "error" in missing.json()
  wrong = requests.post(f"{url}:predict", json={"instances": [[1, 2, 3]]}, timeout=30)
  assert wrong.status_code == 400 and "the signature takes [-1, 32, 32, 3]" in wrong.json()["error"]


def test_client_speaks_the_exports_signature_names():
  """serving/client/metadata.py repeats these names (importing trainer would load TensorFlow for REST)."""
  assert client_lib.DEFAULT_SIGNATURE == export.DEFAULT_SIGNATURE
  assert client_lib.ENCODED_SIGNATURE == export.ENCODED_SIGNATURE


# ------------------------------------------------------- start-up cost

_IN_ITS_OWN_PROCESS = """
import runpy, sys
sys.argv = ["serving.client", *sys.argv[1:]]
try:
  runpy.run_module("serving.client", run_name="__main__", alter_sys=True)
finally:
  loaded = sorted(name for name in sys.modules if name.startswith("tensorflow.python"))
  print("runtime modules:", len(loaded), file=sys.stderr)
"""


def test_the_grpc_command_line_loads_tensorflows_protos_without_its_runtime(server, models, files):
  """`python -m serving.client --grpc` imports TensorFlow's generated protos, not its runtime
  (serving/client/protos.py): about 0.1 s of CPU instead of 3.5 s per start. The answer is
  the same as through the library in a process that has TensorFlow (the other tests)."""
  paths, images = files
  proc = subprocess.run([sys.executable, "-c", _IN_ITS_OWN_PROCESS, "--grpc", server.grpc_target,
                         "--model", "cifar10", "--top-k", "1", paths[0]],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == "runtime modules: 0", proc.stderr
  expected = _expected(models, "cifar10", 2, images[:1])[0]
  assert proc.stdout == f"{paths[0]}: {CIFAR.class_names[expected.argmax()]} {expected.max():.3f}\n"


# Run as `python -c SCRIPT MODULE [ARG]`: MODULE stands for a proto module that, in
# some TensorFlow release, would need TensorFlow's runtime under the command line's
# empty `tensorflow` package (serving/client/protos.py).
_REFUSING_A_PROTO = """
import importlib.abc, sys
from serving.client import grpc_transport, protos

class NeedsTheRuntime(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path, target=None):
    if name == sys.argv[1] and protos.active():
      raise ImportError("needs tensorflow.python")
    return None

sys.meta_path.insert(0, NeedsTheRuntime())
assert protos.use_protos_only()
"""

_REFUSED_UNDER_THE_EMPTY_PACKAGE = _REFUSING_A_PROTO + """
modules = grpc_transport.import_protos()
import tensorflow as tf
print(type(modules[0]).__name__, not protos.active(), int(tf.constant(2) + 1))
"""

# ModelService's protos import error_codes_pb2, which PredictionService's do not.
_STATUS_REFUSED_UNDER_THE_EMPTY_PACKAGE = _REFUSING_A_PROTO + """
transport = grpc_transport.GrpcTransport(sys.argv[2], 30)
assert protos.active()  # PredictionService's protos came without the runtime
status = transport.status("cifar10")
print(status["model_version_status"][0]["state"], not protos.active())
"""


def test_a_proto_that_needs_the_runtime_falls_back_to_importing_tensorflow():
  proc = subprocess.run([sys.executable, "-c", _REFUSED_UNDER_THE_EMPTY_PACKAGE,
                         "tensorflow.core.example.example_pb2"], cwd=REPO,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.split() == ["module", "True", "3"]


def test_model_status_over_grpc_falls_back_to_importing_tensorflow_too(server):
  """GetModelStatus (serving.rollout's wait for a version) imports more protos than Predict."""
  proc = subprocess.run([sys.executable, "-c", _STATUS_REFUSED_UNDER_THE_EMPTY_PACKAGE,
                         "tensorflow.core.protobuf.error_codes_pb2", server.grpc_target], cwd=REPO,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.split() == ["AVAILABLE", "True"]
