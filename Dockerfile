# cnn-trainer training image.
#
#   docker build -t REGISTRY/cnn-trainer:0.1.0 .
#   docker run --rm REGISTRY/cnn-trainer:0.1.0 --help
#
# Python 3.11 with TensorFlow and its CUDA/cuDNN libraries from PyPI
# (tensorflow[and-cuda], pinned to 2.21.* by setup.py's `gpu` extra). The GPU
# driver itself comes from the node: GKE mounts it at /usr/local/nvidia, the
# NVIDIA container toolkit elsewhere.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/nvidia/lib \
    MPLCONFIGDIR=/tmp/matplotlib \
    TF_CPP_MIN_LOG_LEVEL=1

WORKDIR /opt/cnn-trainer
COPY setup.py README.md ./
COPY trainer/ trainer/
COPY serving/ serving/
# Installed as root into the system site-packages; the job runs as uid 1000,
# which can read but not modify them. DL3013 asks for pinned versions: they
# are pinned in setup.py, the one place dependencies are declared. The
# profile extra gives k8s/tensorboard.yaml, which runs this image, its Profile
# tab for --profile-steps traces.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[gpu,profile]" \
 && useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin trainer

USER 1000:1000
WORKDIR /home/trainer
ENTRYPOINT ["python", "-m", "trainer.task"]
