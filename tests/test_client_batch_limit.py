"""The client within the server's batching limit (serving/batching_parameters.txt).

TF Serving run as k8s/serving.yaml runs it (--enable_batching with
serving/batching_parameters.txt) refuses a request of more images than
max_batch_size with INVALID_ARGUMENT "Task size N is larger than maximum
input batch size M". The client's default --batch-size stays within it, and a
larger one is reported as a usage error (exit 2) naming the limit, over REST
and gRPC alike.
"""

import io
import os

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from serving import client as client_lib
from standins.tfserving import StandIn
from standins.tfserving import batching
from trainer import export
from trainer import models as model_lib
from trainer.data import pipeline as data
from trainer.data import synthetic

CIFAR = data.DatasetInfo("cifar10", (32, 32, 3), synthetic.CLASS_NAMES["cifar10"], 10, 10)


def _params():
  with open(os.path.join(REPO, "serving", "batching_parameters.txt"), encoding="utf-8") as f:
    return batching.parse_batching_parameters(f.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
  root = tmp_path_factory.mktemp("models")
  export.export(model_lib.create_model("tutorial", CIFAR.image_shape, 10), CIFAR, "tutorial",
                [str(root / "cifar10")])
  standin = StandIn({"cifar10": str(root / "cifar10")}, batching=_params()).start()
  yield standin
  standin.stop()


@pytest.fixture(scope="module")
def image(tmp_path_factory):
  path = tmp_path_factory.mktemp("images") / "grey.png"
  Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(path)
  return str(path)


def _target(server, protocol):
  return ["--rest", server.rest_url] if protocol == "rest" else ["--grpc", server.grpc_target]


def test_the_default_batch_size_fits_the_servers_max_batch_size():
  assert 1 <= client_lib.DEFAULT_BATCH_SIZE <= _params().max_batch_size


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_more_files_than_max_batch_size_are_sent_in_requests_within_it(protocol, server, image):
  files = [image] * (_params().max_batch_size + 1)
  sizes_before = len(server.models.batching.batch_sizes)
  out = io.StringIO()
  client_lib.run(client_lib.build_parser().parse_args([*_target(server, protocol), "--model",
                                                       "cifar10", *files]), out=out)
  assert len(out.getvalue().splitlines()) == len(files)
  # 65 images in requests of 32, 32 and 1: no batch over the limit reached the model.
  assert max(server.models.batching.batch_sizes[sizes_before:]) <= _params().max_batch_size


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_a_batch_size_over_the_servers_limit_is_a_usage_error_naming_it(protocol, server, image, capfd):
  limit = _params().max_batch_size
  files = [image] * (limit + 1)
  code = client_lib.main([*_target(server, protocol), "--model", "cifar10",
                          "--batch-size", str(limit + 1), *files])
  err = capfd.readouterr().err
  assert code == client_lib.EXIT_INPUT == 2
  assert f"accepts at most {limit} images per request (TF Serving's max_batch_size" in err
  assert f"use --batch-size {limit} or less" in err
  assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_the_library_raises_batch_too_large_with_the_limit(server):
  limit = _params().max_batch_size
  with client_lib.PredictClient.grpc(server.grpc_target, "cifar10", attempts=1) as client:
    with pytest.raises(client_lib.BatchTooLarge) as raised:
      client.predict(np.zeros((limit + 1, 32, 32, 3), np.uint8))
  assert (raised.value.max_batch_size, raised.value.sent) == (limit, limit + 1)
  assert isinstance(raised.value, client_lib.InputError)
