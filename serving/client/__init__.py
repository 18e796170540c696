"""Classify image files with a model behind TF Serving, over REST or gRPC.

  python -m serving.client --rest http://localhost:8501 --model cifar10 cat.png ship.jpg
  python -m serving.client --grpc localhost:8500 --model cifar10 --label stable cat.png
  python -m serving.client --rest http://localhost:8501 --model cifar10 --encoded --json cat.jpg

For each file it prints the `--top-k` classes with their probabilities. The
class names come from the model's own `class_names` output (trainer/export.py),
so no label list can drift from the training data.

By default the files are decoded here (Pillow) and sent as uint8 pixels to the
`serving_default` signature; `--encoded` sends the file bytes to
`serving_encoded` (REST `{"b64": ...}`), which decodes on the server. Nothing is
resized or converted unless `--resize` is given: an image whose size or
channel count differs from what the model's metadata says it takes is refused
before anything is sent. (With `--encoded` only the size is checked: the
server converts channels itself.)

As a library:

  from serving.client import PredictClient
  with PredictClient.rest("http://localhost:8501", "cifar10") as client:
    result = client.predict(images)   # uint8 [N, H, W, C]
    result.top_k(3)[0]                # [("cat", 0.91), ("dog", 0.05), ("deer", 0.01)]

Exit codes (every error is one line on stderr, starting with `error: `; a
retry is announced on a `warning: ` line before it):

  | code | meaning |
  | ---- | ------- |
  | 0    | predictions printed |
  | 1    | unexpected failure (a bug): traceback |
  | 2    | bad local input: a missing or unreadable file, not an image, the wrong size or channel count without --resize, bad flags, or a --batch-size above the server's max_batch_size (the server's INVALID_ARGUMENT "Task size N is larger than maximum input batch size M", reported as "accepts at most M images per request") |
  | 3    | the server rejected the request: NOT_FOUND (unknown model, version or label), INVALID_ARGUMENT (the server's message passed through), FAILED_PRECONDITION or any other error status; or the model's signatures are not the ones trainer.export writes; or the response is malformed (see below) |
  | 69   | the server could not be reached (UNAVAILABLE, after 3 attempts with backoff) or did not answer within --timeout (DEADLINE_EXCEEDED) |

Only UNAVAILABLE (REST: connection refused or reset, HTTP 502/503) is retried:
a prediction is idempotent, and everything else would fail the same way again.
The first retry waits --retry-backoff-s (0.5 s), the second twice that.

Nothing a server sends is trusted. A response that is not what TF Serving
sends for a trainer.export model ends in exit code 3 and names what is wrong:
predictions that are ragged, of the wrong shape or type, NaN or infinite
(TF Serving's REST JSON may carry bare NaN tokens: they are read, then
refused, since NaN cannot be ranked and would make --json output invalid
JSON), class names that are not UTF-8, a version that is not a non-negative
integer, a tensor or body larger than the request can need (refused before
it is allocated), a broken HTTP body. Class names are printed with
non-printable characters escaped (`\x1b[31m` shows as those characters), so a
server cannot send escape sequences to the terminal; --json output escapes
them as JSON does (`\u001b`).

The package, one concern per module:

  errors.py          ClientError and its subclasses, exit codes
  metadata.py        signatures and GetModelMetadata parsing; GetModelStatus parsing
  results.py         PredictResult, and the checks every prediction passes
  rest.py            the REST transport and its response parsing (no TensorFlow)
  grpc_transport.py  the gRPC transport (imports grpc and TensorFlow lazily)
  protos.py          the command line's TensorFlow protos without TensorFlow's runtime
  tensors.py         TensorProto <-> numpy, bounded
  images.py          local files, decoded and fitted with Pillow
  predict_client.py  PredictClient, with retries
  cli.py             flags, output, and the one place errors become exit codes
"""

from serving.client.cli import DEFAULT_BATCH_SIZE, build_parser, log, main, printable, run
from serving.client.errors import (EXIT_INPUT, EXIT_OK, EXIT_REJECTED, EXIT_UNAVAILABLE, BatchTooLarge,
                                   ClientError, InputError, MalformedResponse, RequestRejected,
                                   ServerUnavailable)
from serving.client.images import load_encoded, load_pixels
from serving.client.metadata import (DEFAULT_SIGNATURE, ENCODED_INPUT, ENCODED_SIGNATURE,
                                     IMAGES_INPUT, OUTPUTS, ModelMetadata, Signature, TensorSpec,
                                     VersionStatus, parse_metadata, parse_status)
from serving.client.predict_client import (DEFAULT_ATTEMPTS, DEFAULT_BACKOFF_S, DEFAULT_TIMEOUT_S,
                                           PredictClient)
from serving.client.rest import parse_predict_response
from serving.client.results import Outputs, PredictResult, check_outputs
from serving.client.tensors import to_numpy, to_tensor_proto

__all__ = [
    "BatchTooLarge", "DEFAULT_ATTEMPTS", "DEFAULT_BACKOFF_S", "DEFAULT_BATCH_SIZE", "DEFAULT_SIGNATURE",
    "DEFAULT_TIMEOUT_S", "ENCODED_INPUT", "ENCODED_SIGNATURE", "EXIT_INPUT", "EXIT_OK",
    "EXIT_REJECTED", "EXIT_UNAVAILABLE", "IMAGES_INPUT", "OUTPUTS", "ClientError", "InputError",
    "MalformedResponse", "ModelMetadata", "Outputs", "PredictClient", "PredictResult",
    "RequestRejected", "ServerUnavailable", "Signature", "TensorSpec", "VersionStatus",
    "build_parser", "check_outputs", "load_encoded", "load_pixels", "log", "main",
    "parse_metadata", "parse_predict_response", "parse_status", "printable", "run", "to_numpy",
    "to_tensor_proto"]
