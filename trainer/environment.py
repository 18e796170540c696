"""The one reader of the process environment: every variable the trainer honours.

Nothing else in the trainer reads `os.environ` (tests/test_layout.py checks
it): `read()` copies the variables below into an `Environment`, which the run
plan (trainer/training/train.py) passes down to whoever needs a value. Each
name is defined here once; docs/architecture.md documents each, and a test
checks that the two lists are the same.

  TF_CONFIG                  the cluster (Kubeflow TFJob, Vertex AI, by hand)
  CLUSTER_SPEC               Vertex AI's cluster, when it sets no TF_CONFIG
  JOB_COMPLETION_INDEX       an Indexed Job pod's index (set by Kubernetes)
  TRAINER_NUM_WORKERS        the Indexed Job's completions (k8s/job.yaml)
  TRAINER_JOB_NAME           the Job's name, its pods' hostname prefix (k8s/job.yaml)
  TRAINER_SERVICE            the headless Service, its pods' subdomain (k8s/job.yaml)
  TRAINER_PORT               the gRPC port every worker listens on (k8s/job.yaml)
  TRAINER_JOB_UID            the Job's uid: its pods may take over each other's lock
  TRAINER_JOBSET_NAME        a JobSet's name: its pods' hostname prefix (overlays/jobset)
  TRAINER_REPLICATED_JOB     the JobSet's replicatedJob of this pod (overlays/jobset)
  TRAINER_JOB_INDEX          the index of this pod's Job in its replicatedJob (overlays/jobset)
  AIP_MODEL_DIR              Vertex AI: where model import reads the SavedModel
  AIP_CHECKPOINT_DIR         Vertex AI: where checkpoints go
  AIP_TENSORBOARD_LOG_DIR    Vertex AI: where TensorBoard logs go
  STORAGE_EMULATOR_HOST      a GCS emulator to talk to instead of GCS (tests)
  ONEDNN_MAX_CPU_ISA         the instruction-set cap of TensorFlow's CPU kernels (oneDNN reads
                             it too): --mixed-precision auto takes it into account
  TF_ENABLE_ONEDNN_OPTS      whether TensorFlow's CPU kernels are oneDNN's (TensorFlow reads it):
                             the trainer sets it to 1 on x86-64 where it is unset
                             (`prefer_onednn`), and keeps a value the user set
"""

from __future__ import annotations

import os
import platform
from typing import Iterator, Mapping, Optional

TF_CONFIG = "TF_CONFIG"
CLUSTER_SPEC = "CLUSTER_SPEC"
JOB_COMPLETION_INDEX = "JOB_COMPLETION_INDEX"
TRAINER_NUM_WORKERS = "TRAINER_NUM_WORKERS"
TRAINER_JOB_NAME = "TRAINER_JOB_NAME"
TRAINER_SERVICE = "TRAINER_SERVICE"
TRAINER_PORT = "TRAINER_PORT"
TRAINER_JOB_UID = "TRAINER_JOB_UID"
TRAINER_JOBSET_NAME = "TRAINER_JOBSET_NAME"
TRAINER_REPLICATED_JOB = "TRAINER_REPLICATED_JOB"
TRAINER_JOB_INDEX = "TRAINER_JOB_INDEX"
AIP_MODEL_DIR = "AIP_MODEL_DIR"
AIP_CHECKPOINT_DIR = "AIP_CHECKPOINT_DIR"
AIP_TENSORBOARD_LOG_DIR = "AIP_TENSORBOARD_LOG_DIR"
STORAGE_EMULATOR_HOST = "STORAGE_EMULATOR_HOST"
ONEDNN_MAX_CPU_ISA = "ONEDNN_MAX_CPU_ISA"
TF_ENABLE_ONEDNN_OPTS = "TF_ENABLE_ONEDNN_OPTS"

NAMES = (TF_CONFIG, CLUSTER_SPEC, JOB_COMPLETION_INDEX, TRAINER_NUM_WORKERS, TRAINER_JOB_NAME,
         TRAINER_SERVICE, TRAINER_PORT, TRAINER_JOB_UID, TRAINER_JOBSET_NAME, TRAINER_REPLICATED_JOB,
         TRAINER_JOB_INDEX, AIP_MODEL_DIR, AIP_CHECKPOINT_DIR, AIP_TENSORBOARD_LOG_DIR,
         STORAGE_EMULATOR_HOST, ONEDNN_MAX_CPU_ISA, TF_ENABLE_ONEDNN_OPTS)


class Environment(Mapping[str, str]):
  """The honoured variables that are set, frozen when read; a read-only mapping.

  A mapping, so parsers take `env[NAME]` and `env.get(NAME)` alike from
  `read()` and from a test's dict; the properties are the typed views.
  """

  def __init__(self, values: Mapping[str, str]):
    self._values = {name: values[name] for name in NAMES if name in values}

  def __getitem__(self, name: str) -> str:
    return self._values[name]

  def __iter__(self) -> Iterator[str]:
    return iter(self._values)

  def __len__(self) -> int:
    return len(self._values)

  def __repr__(self) -> str:
    return f"Environment({self._values!r})"

  def _text(self, name: str) -> Optional[str]:
    return self._values.get(name, "").strip() or None

  @property
  def worker_index(self) -> Optional[str]:
    """JOB_COMPLETION_INDEX as set (for the log prefix), None outside an Indexed Job."""
    return self._text(JOB_COMPLETION_INDEX)

  @property
  def job_uid(self) -> str:
    return self._values.get(TRAINER_JOB_UID, "")

  @property
  def job_name(self) -> str:
    return self._values.get(TRAINER_JOB_NAME, "")

  @property
  def storage_emulator_host(self) -> Optional[str]:
    return self._text(STORAGE_EMULATOR_HOST)

  @property
  def onednn_max_cpu_isa(self) -> Optional[str]:
    """The cap on oneDNN's instruction set, as set; None when unset (no cap)."""
    return self._text(ONEDNN_MAX_CPU_ISA)


def read(values: Optional[Mapping[str, str]] = None) -> Environment:
  """The honoured variables of `values`, by default of this process's environment, now."""
  return Environment(os.environ if values is None else values)


# Variables the trainer sets for TensorFlow, which reads them itself.
TF_CPP_MIN_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"


def quiet_tensorflow_logs() -> None:
  """Keeps TensorFlow's C++ INFO lines out of the log, unless the user chose a level.

  Must run before TensorFlow is imported: its C++ logging reads the variable once.
  """
  os.environ.setdefault(TF_CPP_MIN_LOG_LEVEL, "1")


def is_x86_64(machine: Optional[str] = None) -> bool:
  """Whether `machine` (default: this one, as platform.machine() names it) is x86-64, whose
  TensorFlow wheels link oneDNN's x86 kernels."""
  return (machine if machine is not None else platform.machine()).lower() in ("x86_64", "amd64")


def prefer_onednn(machine: Optional[str] = None) -> None:
  """Turns TensorFlow's oneDNN CPU kernels on for x86-64 CPUs, unless the user chose.

  TensorFlow's Linux x86 wheels link oneDNN but use it by default only on
  CPUs with AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX (DefaultOneDnnPolicy()
  and IsMklEnabled() in tensorflow/core/util/util.cc); everywhere else, AVX2
  CPUs (AMD Zen 2 and 3, Intel Haswell to Coffee Lake) and AVX-512 ones
  without VNNI (Intel Skylake-SP), its own Eigen kernels run. On a 2-core
  AMD EPYC Zen 3 (AVX2), compiled training steps in float32 ran 1.5-1.7x
  faster with oneDNN for the tutorial CNN at batch 64 (3,234-3,506 against
  2,078-2,183 images/s) and 1.7-1.9x for ResNet-20 at batch 128 (366-382
  against 205-214); on the AVX-512 CPU where TensorFlow enables it, turning
  it off cost 0.61x (docs/performance.md, "What makes the difference"). A
  value the user set, 0 included, stands; other machines (aarch64, whose
  oneDNN goes through Arm's Compute Library) keep TensorFlow's default.

  Must run before TensorFlow is imported: it reads the variable once.
  """
  if is_x86_64(machine):
    os.environ.setdefault(TF_ENABLE_ONEDNN_OPTS, "1")


def export_tf_config(tf_config: str) -> None:
  """Sets TF_CONFIG for TensorFlow's cluster resolver (MultiWorkerMirroredStrategy reads it)."""
  os.environ[TF_CONFIG] = tf_config
