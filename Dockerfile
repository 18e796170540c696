# cnn-trainer training image: one Dockerfile, two images.
#
#   docker build -t REGISTRY/cnn-trainer:0.1.0 .                                   # GPU (default)
#   docker build --build-arg EXTRAS=profile -t REGISTRY/cnn-trainer:0.1.0-cpu .    # CPU only
#   docker run --rm REGISTRY/cnn-trainer:0.1.0 --help
#
# Python 3.11 with TensorFlow from PyPI. EXTRAS names setup.py's extras: the
# GPU image adds `gpu` (tensorflow[and-cuda], CUDA and cuDNN wheels, about
# 7 GB), the CPU image for CPU clusters (overlays/cpu-dev) leaves it out. The
# GPU driver itself comes from the node: GKE mounts it at /usr/local/nvidia,
# the NVIDIA container toolkit elsewhere. docs/container.md has the build,
# push and run commands, which .ci/container-tests runs too.
FROM python:3.11-slim-bookworm

ARG EXTRAS=gpu,profile

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/nvidia/lib \
    MPLCONFIGDIR=/tmp/matplotlib \
    TF_CPP_MIN_LOG_LEVEL=1

# tini as PID 1: the kernel drops a signal whose action is the default when it
# is sent to PID 1, so a SIGTERM that reached Python before the trainer set its
# handler would be lost and the pod SIGKILLed after its grace period. tini
# forwards it to Python, which is then an ordinary process.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/cnn-trainer
# Dependencies first, from setup.py alone, so that a change to the code
# rebuilds only the small layer below. DL3013 asks for pinned versions: their
# ranges are declared once, in setup.py.
COPY setup.py README.md ./
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[${EXTRAS}]" \
 && pip uninstall -y cnn-trainer \
 && useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin trainer
COPY trainer/ trainer/
COPY serving/ serving/
# Installed as root into the system site-packages; the job runs as uid 1000,
# which can read but not modify them.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --no-deps .

USER 1000:1000
WORKDIR /home/trainer
ENTRYPOINT ["tini", "--", "python", "-m", "trainer.task"]
