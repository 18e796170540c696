"""--mixed-precision: which numbers the model computes in, and `auto`'s choice by machine.

Variables and the logits layer stay float32 whatever is chosen
(trainer/models); the export always serves float32 (trainer/export.py).

`auto` (the default) picks bfloat16 only where it was measured faster at
equal accuracy, and float32 everywhere else (docs/performance.md, "Numerics",
bench/precision.py):

| where                                      | bfloat16 / float32, tutorial CNN training rate | auto     |
|--------------------------------------------|------------------------------------------------|----------|
| CPU with AVX512-BF16 (AMD Zen 5, 2 cores)  | 1.5-1.7x (8,000-8,700 vs 5,000-5,400 images/s) | bfloat16 |
| the same, oneDNN capped at AVX512_CORE     | 0.45x (bfloat16 emulated)                      | float32  |
| the same, oneDNN capped at AVX2            | fails: oneDNN has no AVX2 bfloat16 convolution | float32  |
| CPU with AVX2 only (AMD Zen 3, 2 cores)    | 0.08x (bfloat16 in TensorFlow's own kernels)   | float32  |
| CPU with AVX2_VNNI_2, no AVX-512           | not measured (oneDNN's AVX2_VNNI_2 kernels)    | float32  |
| CPU with AMX (Intel Sapphire Rapids on)    | not measured; AMX CPUs also have AVX512-BF16   | bfloat16 |
| GPU                                        | not measured; this CNN is input-bound there    | float32  |

What decides is the instruction set oneDNN (TensorFlow's CPU kernels) may
use: the CPU's, lowered by ONEDNN_MAX_CPU_ISA when that is set (oneDNN's
dispatcher control, `dnnl_cpu_isa_t`). Each level's bit mask contains the
masks below it, so "at least AVX512_CORE_BF16" is a mask test.

Whether a bfloat16 op reaches oneDNN at all is TensorFlow's choice, by the CPU
alone: its oneDNN graph rewrite takes bfloat16 ops only where
IsBF16SupportedByOneDNNOnThisCPU() holds (tensorflow/core/util/util.cc: the CPU
has AVX512F or AVX_NE_CONVERT; tensorflow/core/graph/mkl_graph_util.h logs
"Falling back to default implementation" otherwise). oneDNN has bfloat16
kernels at AVX512_CORE and at AVX2_VNNI_2 (AVX-VNNI-INT8 and AVX-NE-CONVERT,
without AVX-512) only. So on an AVX-512 CPU with oneDNN capped below AVX-512 the
op goes to oneDNN, which cannot run it, while on a CPU without AVX-512 nor
AVX-NE-CONVERT it runs in TensorFlow's own (Eigen) kernel: slowly, but it runs.
A CPU with AVX2_VNNI_2 runs it in oneDNN (not measured: no such CPU here).
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Optional

from trainer import errors

# oneDNN's dnnl_cpu_isa_t masks (oneDNN include/oneapi/dnnl/dnnl_types.h), by the
# names ONEDNN_MAX_CPU_ISA takes; DEFAULT and ALL lift the cap.
ISA_MASKS = {
    "SSE41": 0x1, "AVX": 0x3, "AVX2": 0x7, "AVX2_VNNI": 0xF, "AVX2_VNNI_2": 0x1F,
    "AVX512_CORE": 0x27, "AVX512_CORE_VNNI": 0x67, "AVX512_CORE_BF16": 0xE7,
    "AVX10_1_512": 0x1EF, "AVX512_CORE_FP16": 0x1EF,
    "AVX10_1_512_AMX": 0xFEF, "AVX512_CORE_AMX": 0xFEF,
    "AVX10_1_512_AMX_FP16": 0x1FEF, "AVX512_CORE_AMX_FP16": 0x1FEF,
}
_UNCAPPED = ("", "ALL", "DEFAULT")
_BF16 = ISA_MASKS["AVX512_CORE_BF16"]
# The CPU flags (Linux's names) for which TensorFlow sends bfloat16 ops to oneDNN:
# IsBF16SupportedByOneDNNOnThisCPU() in tensorflow/core/util/util.cc.
_ONEDNN_TAKES_BF16 = ("avx512f", "avx_ne_convert")
# The levels at which oneDNN has bfloat16 kernels, with the CPU flags each needs:
# platform::has_data_type_support(bf16) in oneDNN's src/cpu/platform.cpp (v3.7.3,
# the one TensorFlow 2.21 links) is mayiuse(avx512_core) || mayiuse(avx2_vnni_2), and
# mayiuse (src/cpu/x64/cpu_isa_traits.hpp) needs both the CPU's features and the
# level's whole mask inside ONEDNN_MAX_CPU_ISA's (AVX2_VNNI_2, 0x1F, is not inside
# AVX512_CORE's 0x27: a cap at an AVX-512 level leaves oneDNN no AVX2_VNNI_2 kernel).
_BF16_KERNELS = {
    "AVX512_CORE": frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq"}),
    "AVX2_VNNI_2": frozenset({"avx2", "avx_vnni", "avx_vnni_int8", "avx_ne_convert"}),
}


def onednn_takes_bfloat16(flags: Iterable[str]) -> bool:
  """Whether TensorFlow sends bfloat16 ops to oneDNN on a CPU with these flags, whatever the cap."""
  return not set(flags).isdisjoint(_ONEDNN_TAKES_BF16)


def onednn_bfloat16_levels(flags: Iterable[str], cap: Optional[str]) -> tuple[str, ...]:
  """The levels with bfloat16 kernels (`_BF16_KERNELS`) oneDNN may use here, under `cap`.

  Raises:
    ConfigError: `cap` is not a level oneDNN knows.
  """
  flags = set(flags)
  cap_mask = _cap_mask(cap)
  return tuple(level for level, needs in _BF16_KERNELS.items()
               if needs <= flags and cap_mask & ISA_MASKS[level] == ISA_MASKS[level])


def _cap_name(cap: Optional[str]) -> str:
  """ONEDNN_MAX_CPU_ISA as oneDNN reads it: any case, surrounding blanks ignored."""
  return (cap or "").strip().upper()


def _cap_mask(cap: Optional[str]) -> int:
  cap_name = _cap_name(cap)
  if cap_name in _UNCAPPED:
    return ~0
  if cap_name not in ISA_MASKS:
    raise errors.ConfigError(
        f"ONEDNN_MAX_CPU_ISA={cap!r} is not an instruction set oneDNN knows: use one of "
        f"{', '.join(ISA_MASKS)}, or unset it.")
  return ISA_MASKS[cap_name]


@dataclasses.dataclass(frozen=True)
class Choice:
  """The precision a run computes in, and why."""
  policy: str  # "off" (float32), "bfloat16" or "float16": config.mixed_precision's values
  reason: str

  @property
  def name(self) -> str:
    return "float32" if self.policy == "off" else self.policy


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
  """The CPU's feature flags as Linux lists them; empty where there is no such file."""
  try:
    with open(path, encoding="utf-8", errors="replace") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "flags":
          return frozenset(value.split())
  except OSError:
    pass
  return frozenset()


def onednn_enabled() -> bool:
  """Whether TensorFlow's CPU kernels are oneDNN's in this process: TensorFlow's own answer.

  IsMklEnabled() (tensorflow/core/util/util.cc): TF_ENABLE_ONEDNN_OPTS where
  set (trainer/environment.py's `prefer_onednn` sets it on x86-64), else
  TensorFlow's default by CPU. Read through the module TensorFlow's own tests
  use (tensorflow/python/framework/test_util.py); it imports TensorFlow.
  """
  from tensorflow.python.util import _pywrap_util_port  # pylint: disable=import-outside-toplevel
  return bool(_pywrap_util_port.IsMklEnabled())


def isa_level(flags: Iterable[str], cap: Optional[str]) -> tuple[int, str]:
  """(mask, name) of the instruction set oneDNN may use: the CPU's, lowered by `cap`.

  Raises:
    ConfigError: `cap` (ONEDNN_MAX_CPU_ISA) is not a level oneDNN knows.
  """
  flags = set(flags)
  if {"amx_bf16", "amx_tile"} <= flags:
    cpu = "AVX512_CORE_AMX"
  elif "avx512_bf16" in flags:
    cpu = "AVX512_CORE_BF16"
  elif {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
    cpu = "AVX512_CORE"
  elif "avx2" in flags:
    cpu = "AVX2"
  else:
    cpu = "SSE41"
  mask = ISA_MASKS[cpu] & _cap_mask(cap)
  name = cpu if mask == ISA_MASKS[cpu] else _cap_name(cap)
  return mask, name


def choose(requested: str, gpus: int, flags: Iterable[str], cap: Optional[str],
           onednn: bool = True) -> Choice:
  """Resolves --mixed-precision for this machine.

  Args:
    requested: config.mixed_precision: auto, off, bfloat16 or float16.
    gpus: local GPUs TensorFlow sees.
    flags: the CPU's feature flags (`cpu_flags()`).
    cap: ONEDNN_MAX_CPU_ISA, or None.
    onednn: whether TensorFlow's CPU kernels are oneDNN's (`onednn_enabled()`).
      Off (TF_ENABLE_ONEDNN_OPTS=0), no op reaches oneDNN: bfloat16 runs in
      TensorFlow's own kernels on every CPU, and no cap refuses it.

  Raises:
    ConfigError: bfloat16 asked for on a CPU-only machine where TensorFlow hands
      bfloat16 convolutions to oneDNN but oneDNN may use neither of its levels
      with bfloat16 kernels (AVX512_CORE, AVX2_VNNI_2: the CPU lacks them or
      ONEDNN_MAX_CPU_ISA excludes them), where training would fail in its first
      step with oneDNN's "could not create a primitive descriptor".
  """
  if gpus:
    if requested == "auto":
      return Choice("off", f"auto on {gpus} GPU(s): float32 (bfloat16 not measured on GPUs "
                           "for these models; --mixed-precision bfloat16 to try it)")
    return Choice(requested, f"--mixed-precision {requested}")
  flags = frozenset(flags)
  mask, isa = isa_level(flags, cap)
  native = onednn and mask & _BF16 == _BF16
  to_onednn = onednn and onednn_takes_bfloat16(flags)
  kernels = onednn_bfloat16_levels(flags, cap) if onednn else ()
  if requested == "bfloat16" and to_onednn and not kernels:
    possible = onednn_bfloat16_levels(flags, None)  # the CPU's own, uncapped
    fix = (f"Lift ONEDNN_MAX_CPU_ISA to {' or '.join(possible)} (or unset it), or use" if possible
           else "Use")
    raise errors.ConfigError(
        f"--mixed-precision bfloat16 cannot run on this CPU with oneDNN at {isa}: TensorFlow "
        "sends bfloat16 convolutions to oneDNN on this CPU, and oneDNN has them only at "
        "AVX512_CORE and AVX2_VNNI_2, so the first step would fail. "
        f"{fix} --mixed-precision auto (float32 here) or off.")
  if requested != "auto":
    slow = ""
    # Measured on an AVX2 CPU: 291 against 2,074 images/s on TensorFlow's own float32
    # kernels, 305 against 3,551-3,721 on oneDNN's (docs/performance.md, "Numerics").
    if requested == "bfloat16" and not onednn:
      slow = (" (oneDNN off: TensorFlow's own kernels emulate bfloat16, measured 7x slower "
              "than float32 on an AVX2 CPU)")
    elif requested == "bfloat16" and not to_onednn:
      slow = (" (no AVX-512 here: TensorFlow's own kernels emulate bfloat16, measured 12x "
              "slower than float32 on oneDNN's)")
    elif requested == "bfloat16" and "AVX512_CORE" not in kernels:
      slow = " (oneDNN's AVX2_VNNI_2 bfloat16 kernels: speed not measured)"
    elif requested == "bfloat16" and not native:
      slow = " (bfloat16 is emulated without AVX512-BF16: measured 2.2x slower than float32)"
    return Choice(requested, f"--mixed-precision {requested}{slow}")
  if native:
    return Choice("bfloat16", f"auto on a CPU with native bfloat16 ({isa}): bfloat16, "
                              "measured 1.5-1.7x faster than float32 at equal accuracy")
  if not onednn:
    return Choice("off", "auto with oneDNN off (TF_ENABLE_ONEDNN_OPTS=0): float32")
  return Choice("off", f"auto on a CPU without native bfloat16 ({isa}): float32")
