"""TensorFlow's CPU kernels are oneDNN's on x86-64; --mixed-precision auto picks bfloat16 only
where the CPU computes it natively, and says so."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from trainer import environment
from trainer import errors
from trainer.training import precision

# /proc/cpuinfo flag sets of the machines docs/performance.md measured or names.
AVX2 = {"sse4_2", "avx", "avx2", "fma"}
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni"}
AVX512_BF16 = AVX512 | {"avx512_bf16"}          # AMD Zen 4 and 5, Intel Cooper Lake
AMX = AVX512_BF16 | {"amx_bf16", "amx_tile", "amx_int8"}  # Intel Sapphire Rapids on
# AVX-VNNI-INT8 and AVX-NE-CONVERT: oneDNN's AVX2_VNNI_2 level, which has bfloat16
# kernels (Intel Sierra Forest, Arrow Lake, Lunar Lake without AVX-512; Granite Rapids with it).
VNNI_2 = {"avx_vnni", "avx_vnni_int8", "avx_ne_convert"}


@pytest.mark.parametrize("flags, cap, chosen", [
    (AVX512_BF16, None, "bfloat16"),
    (AMX, None, "bfloat16"),
    (AMX, "ALL", "bfloat16"),
    (AMX, "avx512_core_bf16", "bfloat16"),  # oneDNN takes the name in any case
    (AVX512_BF16, "AVX512_CORE", "float32"),  # bfloat16 emulated: measured 2.2x slower
    (AVX512_BF16, "AVX2", "float32"),         # no bfloat16 convolution at all
    (AMX, "AVX512_CORE_VNNI", "float32"),
    (AVX512, None, "float32"),
    (AVX2, None, "float32"),
    (set(), None, "float32"),                 # no /proc/cpuinfo: nothing known, nothing risked
])
def test_auto_is_bfloat16_exactly_where_onednn_may_use_native_bfloat16(flags, cap, chosen):
  choice = precision.choose("auto", gpus=0, flags=flags, cap=cap)
  assert choice.name == chosen
  assert choice.reason.startswith("auto on a CPU")


def test_auto_keeps_float32_on_gpus_and_explicit_choices_stand():
  assert precision.choose("auto", gpus=1, flags=AMX, cap=None).name == "float32"
  assert precision.choose("bfloat16", gpus=1, flags=AVX2, cap=None).name == "bfloat16"
  assert precision.choose("off", gpus=0, flags=AMX, cap=None).name == "float32"
  assert precision.choose("float16", gpus=0, flags=AVX512, cap=None).policy == "float16"
  emulated = precision.choose("bfloat16", gpus=0, flags=AVX512, cap=None)
  assert emulated.policy == "bfloat16" and "2.2x slower" in emulated.reason


LIFT_TO_AVX512 = "Lift ONEDNN_MAX_CPU_ISA to AVX512_CORE (or unset it), or use --mixed-precision auto"
USE_AUTO = ". Use --mixed-precision auto"


@pytest.mark.parametrize("flags, cap, advice", [
    (AVX512_BF16, "AVX2", LIFT_TO_AVX512),
    (AMX, "AVX2_VNNI_2", LIFT_TO_AVX512),  # Sapphire Rapids: no AVX-VNNI-INT8, no AVX-NE-CONVERT
    (AVX512, "AVX", LIFT_TO_AVX512),
    # TensorFlow sends bfloat16 to oneDNN on AVX-NE-CONVERT too; without AVX-VNNI-INT8
    # the CPU has no level with bfloat16 kernels.
    (AVX2 | {"avx_ne_convert"}, None, USE_AUTO),
    (AVX2 | VNNI_2, "AVX2_VNNI", "Lift ONEDNN_MAX_CPU_ISA to AVX2_VNNI_2 (or unset it)"),
    # AVX512_CORE's mask (0x27) does not hold AVX2_VNNI_2's (0x1F): that cap leaves none.
    (AVX2 | VNNI_2, "AVX512_CORE", "Lift ONEDNN_MAX_CPU_ISA to AVX2_VNNI_2 (or unset it)"),
    (AMX | VNNI_2, "AVX2", "Lift ONEDNN_MAX_CPU_ISA to AVX512_CORE or AVX2_VNNI_2 (or unset it)"),
])
def test_bfloat16_is_refused_where_tensorflow_sends_it_to_onednn_and_onednn_has_no_kernel(
    flags, cap, advice):
  """oneDNN's bfloat16 kernels are at AVX512_CORE and AVX2_VNNI_2 only (its
  platform::has_data_type_support); lifting the cap helps only where the CPU has one."""
  with pytest.raises(errors.ConfigError, match="--mixed-precision bfloat16 cannot run on this CPU "
                                               "with oneDNN at AVX") as refused:
    precision.choose("bfloat16", gpus=0, flags=flags, cap=cap)
  assert advice in str(refused.value)


@pytest.mark.parametrize("flags, cap", [
    (AVX2 | VNNI_2, None), (AVX2 | VNNI_2, "AVX2_VNNI_2"), (AMX | VNNI_2, "AVX2_VNNI_2"),
])
def test_bfloat16_runs_on_onednns_avx2_vnni_2_kernels_and_says_their_speed_is_unmeasured(flags, cap):
  choice = precision.choose("bfloat16", gpus=0, flags=flags, cap=cap)
  assert choice.policy == "bfloat16"
  assert choice.reason == ("--mixed-precision bfloat16 (oneDNN's AVX2_VNNI_2 bfloat16 kernels: "
                           "speed not measured)")
  # auto takes bfloat16 only where it was measured faster: not here.
  assert precision.choose("auto", gpus=0, flags=flags, cap=cap).name == "float32"


@pytest.mark.parametrize("cap", [None, "AVX2", "AVX"])
def test_bfloat16_without_avx512_runs_in_tensorflows_own_kernels_and_says_it_is_slow(cap):
  """No AVX512F (nor AVX_NE_CONVERT): TensorFlow keeps bfloat16 out of oneDNN, so no cap matters."""
  choice = precision.choose("bfloat16", gpus=0, flags=AVX2, cap=cap)
  assert choice.policy == "bfloat16"
  assert "TensorFlow's own kernels emulate bfloat16, measured 12x slower" in choice.reason


def test_an_unknown_isa_cap_is_refused_with_the_names_onednn_takes():
  with pytest.raises(errors.ConfigError, match="ONEDNN_MAX_CPU_ISA='AVX3' is not an instruction set"):
    precision.choose("auto", gpus=0, flags=AMX, cap="AVX3")


@pytest.mark.parametrize("machine, before, after", [
    ("x86_64", None, "1"),         # unset: oneDNN's kernels, whatever TensorFlow's CPU test says
    ("AMD64", None, "1"),
    ("x86_64", "0", "0"),          # the user's choice stands
    ("x86_64", "false", "false"),
    ("x86_64", "1", "1"),
    ("aarch64", None, None),       # TensorFlow's default (Arm's Compute Library behind oneDNN)
])
def test_prefer_onednn_turns_onednn_on_for_x86_64_where_the_user_has_not_chosen(
    monkeypatch, machine, before, after):
  if before is None:
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
  else:
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", before)
  environment.prefer_onednn(machine)
  assert os.environ.get("TF_ENABLE_ONEDNN_OPTS") == after


def test_with_onednn_off_no_cap_refuses_bfloat16_and_auto_keeps_float32():
  """TF_ENABLE_ONEDNN_OPTS=0: no op reaches oneDNN, so bfloat16 runs in TensorFlow's own
  kernels whatever the cap, and a CPU's native bfloat16 is out of reach."""
  auto = precision.choose("auto", gpus=0, flags=AMX, cap=None, onednn=False)
  assert (auto.name, auto.reason) == (
      "float32", "auto with oneDNN off (TF_ENABLE_ONEDNN_OPTS=0): float32")
  for flags, cap in ((AMX, "AVX2"), (AVX512, "AVX512_CORE"), (AVX2, None)):
    bf16 = precision.choose("bfloat16", gpus=0, flags=flags, cap=cap, onednn=False)
    assert bf16.policy == "bfloat16"
    assert "oneDNN off: TensorFlow's own kernels emulate bfloat16" in bf16.reason
  # With oneDNN on, the same AVX2 cap on an AMX CPU is refused (above).
  with pytest.raises(errors.ConfigError):
    precision.choose("bfloat16", gpus=0, flags=AMX, cap="AVX2", onednn=True)


def test_cpu_flags_come_from_the_flags_line(tmp_path):
  cpuinfo = tmp_path / "cpuinfo"
  cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 avx512_bf16\n\n"
                     "processor\t: 1\nflags\t\t: fpu\n")
  assert precision.cpu_flags(str(cpuinfo)) == {"fpu", "avx2", "avx512_bf16"}
  assert precision.cpu_flags(str(tmp_path / "absent")) == frozenset()


def _synthetic(tmp_path, isa):
  # Without the TF_ENABLE_ONEDNN_OPTS conftest sets: the trainer chooses its kernels itself.
  env = {**{k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"},
         "ONEDNN_MAX_CPU_ISA": isa, "PYTHONPATH": REPO}
  return subprocess.run([sys.executable, "-m", "trainer.synthetic", "--dataset", "mnist",
                         "--data-dir", str(tmp_path / "data"), "--num-train", "256",
                         "--num-test", "64"], env=env, capture_output=True, text=True,
                        timeout=300, cwd=REPO), env


def test_at_avx2_auto_trains_in_float32_records_why_and_bfloat16_runs_only_off_onednn(tmp_path):
  """oneDNN at AVX2: capped on an AVX-512 CPU, where TensorFlow still sends bfloat16 to
  oneDNN and the trainer exits 2 before training; or an AVX2-only CPU, where bfloat16 runs
  in TensorFlow's own kernels. Which one this machine is decides what bfloat16 must do."""
  made, env = _synthetic(tmp_path, isa="AVX2")
  assert made.returncode == 0, made.stderr[-2000:]
  base = [sys.executable, "-m", "trainer.task", "--preset", "smoke", "--dataset", "mnist",
          "--data-dir", str(tmp_path / "data"), "--batch-size", "32", "--train-split", "train",
          "--eval-split", "test"]
  bf16 = subprocess.run(base + ["--job-dir", str(tmp_path / "bf16"), "--mixed-precision",
                                "bfloat16"], env=env, capture_output=True, text=True, timeout=300)
  if precision.onednn_takes_bfloat16(precision.cpu_flags()):
    assert bf16.returncode == 2, bf16.stderr[-2000:]
    assert "--mixed-precision bfloat16 cannot run on this CPU with oneDNN at AVX2" in bf16.stderr
    assert not os.path.exists(tmp_path / "bf16" / "checkpoints")  # refused before any training
  else:
    assert bf16.returncode == 0, bf16.stderr[-2000:]
    with open(tmp_path / "bf16" / "config.json") as f:
      assert json.load(f)["resolved"]["compute_precision"] == "bfloat16"
    with open(tmp_path / "bf16" / "metrics.json") as f:
      assert json.load(f)["export"]["version"] == 1

  trained = subprocess.run(base + ["--job-dir", str(tmp_path / "auto")], env=env,
                           capture_output=True, text=True, timeout=300)
  assert trained.returncode == 0, trained.stderr[-2000:]
  with open(tmp_path / "auto" / "config.json") as f:
    recorded = json.load(f)
  assert recorded["mixed_precision"] == "auto"
  assert recorded["resolved"]["compute_precision"] == "float32"
  assert recorded["resolved"]["compute_precision_reason"] == (
      "auto on a CPU without native bfloat16 (AVX2): float32")
  # The trainer's own choice of kernels on x86-64, whatever TensorFlow's default for the CPU.
  if environment.is_x86_64():
    assert recorded["resolved"]["onednn"] is True
    assert "CPU kernels: oneDNN;" in trained.stderr
  else:  # TensorFlow's own default for the CPU
    assert isinstance(recorded["resolved"]["onednn"], bool)


def test_with_onednn_turned_off_the_run_records_it_and_bfloat16_runs_under_any_cap(tmp_path):
  """TF_ENABLE_ONEDNN_OPTS=0 set by the user stands: TensorFlow's own kernels, said in the log
  and config.json, and bfloat16 under an AVX2 cap trains on every CPU instead of being refused."""
  made, env = _synthetic(tmp_path, isa="AVX2")
  assert made.returncode == 0, made.stderr[-2000:]
  env = {**env, "TF_ENABLE_ONEDNN_OPTS": "0"}
  trained = subprocess.run(
      [sys.executable, "-m", "trainer.task", "--preset", "smoke", "--dataset", "mnist",
       "--data-dir", str(tmp_path / "data"), "--batch-size", "32", "--train-split", "train",
       "--eval-split", "test", "--job-dir", str(tmp_path / "off"), "--mixed-precision",
       "bfloat16"], env=env, capture_output=True, text=True, timeout=300)
  assert trained.returncode == 0, trained.stderr[-2000:]
  assert "CPU kernels: TensorFlow's own (oneDNN off: TF_ENABLE_ONEDNN_OPTS=0)" in trained.stderr
  with open(tmp_path / "off" / "config.json") as f:
    resolved = json.load(f)["resolved"]
  assert resolved["onednn"] is False
  assert resolved["compute_precision"] == "bfloat16"
  assert "oneDNN off" in resolved["compute_precision_reason"]
  with open(tmp_path / "off" / "metrics.json") as f:
    assert json.load(f)["export"]["version"] == 1
