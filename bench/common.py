"""Shared helpers for the benchmarks: synthetic CIFAR-shaped data and robust summaries.

Every benchmark compares against a baseline measured in the same process run,
interleaving the variants (A B A B ...) so that machine noise hits both, and
reports the median of the per-pair ratios with their spread.
"""

from __future__ import annotations

import os
import statistics
import sys
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # runnable as `python bench/NAME.py` from a checkout
  sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")


def cifar_like_source(num_train: int, num_test: int, seed: int = 0, signal: float = 0.4):
  """Learnable CIFAR-10-shaped data in memory (trainer.synthetic), as a trainer Source."""
  from trainer.data import pipeline as data  # pylint: disable=import-outside-toplevel
  from trainer.data import synthetic  # pylint: disable=import-outside-toplevel
  train = synthetic.make_arrays(num_train, (32, 32, 3), 10, seed=seed, signal=signal)
  test = synthetic.make_arrays(num_test, (32, 32, 3), 10, seed=seed + 1, signal=signal)
  info = data.DatasetInfo("cifar10", (32, 32, 3), synthetic.CLASS_NAMES["cifar10"], num_train, num_test)
  return data.ArraySource(info, train, test)


def spread(values) -> str:
  values = sorted(values)
  return f"median {statistics.median(values):.3f} (min {values[0]:.3f}, max {values[-1]:.3f}, n={len(values)})"


def machine() -> str:
  import platform  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  gpus = tf.config.list_physical_devices("GPU")
  return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{len(gpus)} GPU(s), TensorFlow {tf.__version__}")


# The vector extensions that decide which TensorFlow (oneDNN) kernels run.
_VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni",
                 "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile")


def cpu() -> str:
  """The CPU model and its vector extensions, from /proc/cpuinfo (Linux)."""
  model, flags = "unknown CPU", set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
          model = value.strip()
        elif key.strip() == "flags":
          flags = set(value.split())
          break
  except OSError:
    return "unknown CPU (no /proc/cpuinfo)"
  present = [flag for flag in _VECTOR_FLAGS if flag in flags]
  return f"{model}; {os.cpu_count()} CPUs; vector extensions: {' '.join(present) or 'none'}"
