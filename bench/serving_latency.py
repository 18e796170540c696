"""Serving latency: the exported SavedModel in-process, Keras predict, REST and gRPC.

  python bench/serving_latency.py            # ~60 s on 2 CPUs
  python bench/serving_latency.py --quick    # ~20 s, for a smoke check

Builds the tutorial CNN (random weights: latency does not depend on them),
exports it with trainer.export, and times one call of each variant per round,
at batch 1 and batch 64:

  savedmodel   the exported serving_default signature, called in-process
  keras        Keras `model.predict` on the same images
  rest, grpc   serving.client.PredictClient round trips through the TF Serving
               stand-in (tests/standins/tfserving), which runs the
               same SavedModel on a thread of this process

Variants run interleaved (one call each per round, in rotating order), so
machine noise falls on all of them alike; compare the ratios, not the absolute
numbers. The REST and gRPC ratios against the in-process call are the cost of
the protocol: serialisation (JSON lists of pixels for REST, TensorProto for
gRPC), HTTP or HTTP/2 on loopback, and the GIL shared by client and server
threads. They are not TF Serving's own numbers: the real server parses in C++
and batches across requests.

Measured 2026-11-22 on the 2-CPU development machine (TensorFlow 2.21, default
run, another TensorFlow job running alongside), p50 latency ratios:

  SavedModel in-process / Keras predict   batch 1: 0.03x   batch 64: 0.13x
  REST via stand-in / SavedModel          batch 1: 3.25x   batch 64: 12.2x
  gRPC via stand-in / SavedModel          batch 1: 1.85x   batch 64: 1.30x

(p50: SavedModel 1.6 ms / 7.5 ms, Keras predict 51 ms / 59 ms, REST 5.0 ms /
91 ms, gRPC 2.9 ms / 9.7 ms at batch 1 / 64.) Keras `predict` pays ~50 ms of
per-call set-up, so it is the wrong tool for online serving; gRPC costs little
over the in-process call, while REST's JSON lists of pixels dominate at batch
64 (~16 KB of JSON per 32x32 image): send large batches over gRPC, or use
--encoded, which sends each image as a base64 PNG or JPEG of a few KB.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from serving.client import PredictClient  # noqa: E402
from trainer.data import pipeline as data  # noqa: E402
from trainer import export  # noqa: E402
from trainer import models as model_lib  # noqa: E402
from trainer.data import synthetic  # noqa: E402

BATCHES = (1, 64)
VARIANTS = ("savedmodel", "keras", "rest", "grpc")
LABELS = {"savedmodel": "SavedModel in-process", "keras": "Keras predict",
          "rest": "REST via stand-in", "grpc": "gRPC via stand-in"}


def _load_standin():
  """tests/standins/tfserving, imported from tests/ (not a package of the project)."""
  sys.path.insert(0, os.path.join(REPO, "tests"))
  import standins.tfserving  # pylint: disable=import-outside-toplevel
  return standins.tfserving


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true", help="Fewer rounds (a smoke check).")
  parser.add_argument("--rounds", type=int, default=None,
                      help="Measured rounds per variant (default: 150, or 25 with --quick).")
  args = parser.parse_args(argv)
  rounds = args.rounds or (25 if args.quick else 150)
  warmup = 3 if args.quick else 10

  info = data.DatasetInfo("cifar10", (32, 32, 3), synthetic.CLASS_NAMES["cifar10"], 10, 10)
  keras_model = model_lib.create_model("tutorial", info.image_shape, info.num_classes)
  base = os.path.join(tempfile.mkdtemp(prefix="serving-bench-"), "cifar10")
  _, (path,) = export.export(keras_model, info, "tutorial", [base])
  serve = tf.saved_model.load(path).signatures["serving_default"]
  images = {b: synthetic.make_arrays(b, info.image_shape, seed=b)[0] for b in BATCHES}

  standin = _load_standin().StandIn({"cifar10": base}).start()
  rest = PredictClient.rest(standin.rest_url, "cifar10")
  grpc = PredictClient.grpc(standin.grpc_target, "cifar10")
  calls = {
      "savedmodel": lambda x: serve(images=tf.constant(x))["probabilities"].numpy(),
      "keras": lambda x: keras_model.predict(x, batch_size=len(x), verbose=0),
      "rest": lambda x: rest.predict(x).probabilities,
      "grpc": lambda x: grpc.predict(x).probabilities,
  }
  # Every variant must compute the same thing, or the timings compare nothing.
  # (Keras returns the logits; the signatures add the softmax.)
  for b in BATCHES:
    reference = calls["savedmodel"](images[b])
    for name in VARIANTS[1:]:
      out = calls[name](images[b])
      out = tf.nn.softmax(out).numpy() if name == "keras" else out
      np.testing.assert_allclose(out, reference, atol=1e-5, err_msg=name)

  # TensorFlow's start-up heap is ~300k Python objects; every garbage
  # collection triggered by the REST variants' JSON (~200k ints per batch of 64)
  # would rescan it, making JSON handling ~7x slower than in a client process
  # without TensorFlow. A server process would freeze its start-up heap too.
  gc.collect()
  gc.freeze()
  keys = [(v, b) for b in BATCHES for v in VARIANTS]
  seconds = {k: [] for k in keys}
  started = time.time()
  for r in range(warmup + rounds):
    shift = r % len(keys)
    for variant, batch in keys[shift:] + keys[:shift]:  # rotating order
      t0 = time.perf_counter()
      calls[variant](images[batch])
      if r >= warmup:
        seconds[(variant, batch)].append(time.perf_counter() - t0)
  elapsed = time.time() - started
  rest.close()
  grpc.close()
  standin.stop()

  p50 = {k: float(np.percentile(v, 50)) for k, v in seconds.items()}
  p99 = {k: float(np.percentile(v, 99)) for k, v in seconds.items()}
  print(f"Serving latency: tutorial CNN 32x32x3, {rounds} interleaved rounds after {warmup} warm-up "
        f"({elapsed:.0f} s), {os.cpu_count()} CPUs, TensorFlow {tf.__version__}")
  print(f"{'variant':<24}{'batch':>6}{'p50 ms':>10}{'p99 ms':>10}{'pred/s':>10}")
  for variant, batch in keys:
    k = (variant, batch)
    print(f"{LABELS[variant]:<24}{batch:>6}{p50[k] * 1e3:>10.2f}{p99[k] * 1e3:>10.2f}"
          f"{batch / np.mean(seconds[k]):>10.0f}")
  print("Ratios of p50 latency (lower is faster for the first named):")
  for first, second in (("savedmodel", "keras"), ("rest", "savedmodel"), ("grpc", "savedmodel"),
                        ("rest", "grpc")):
    ratios = ", ".join(f"batch {b}: {p50[(first, b)] / p50[(second, b)]:.2f}x" for b in BATCHES)
    print(f"  {LABELS[first]} / {LABELS[second]}: {ratios}")


if __name__ == "__main__":
  main()
