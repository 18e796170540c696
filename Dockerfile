# cnn-trainer training image: one Dockerfile, two images.
#
#   docker build -t REGISTRY/cnn-trainer:0.1.0 .                                 # GPU (default)
#   docker build --build-arg VARIANT=cpu -t REGISTRY/cnn-trainer:0.1.0-cpu .     # CPU only
#   docker run --rm REGISTRY/cnn-trainer:0.1.0 --help
#
# Python 3.11 with TensorFlow from PyPI, every package pinned with its hashes
# in requirements/image-VARIANT.lock (written from setup.py by
# requirements/lock): the GPU image adds setup.py's `gpu` extra
# (tensorflow[and-cuda], CUDA and cuDNN wheels, about 7 GB), the CPU image for
# CPU clusters (overlays/cpu-dev) leaves it out. The GPU driver itself comes
# from the node: GKE mounts it at /usr/local/nvidia, the NVIDIA container
# toolkit elsewhere. docs/container.md has the build,
# push and run commands, which .ci/build-image and tests/test_container.py run too.
FROM python:3.11-slim-bookworm

ARG VARIANT=gpu

# No NVIDIA_VISIBLE_DEVICES: the runtime sets it to the GPUs the pod was
# given (the device plugin), where =all here would show a container every GPU
# of its node on runtimes that honour the variable, requested or not.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
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
# Dependencies first, from the lock alone, so that a change to the code
# rebuilds only the small layers below. --require-hashes: pip installs exactly
# the files the lock names, or fails; --no-deps and `pip check`: nothing
# outside the lock comes in, and the lock is complete.
COPY requirements/image-${VARIANT}.lock /tmp/requirements.lock
RUN pip install --no-cache-dir --require-hashes --no-deps -r /tmp/requirements.lock \
 && pip check \
 && rm /tmp/requirements.lock \
 && useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin trainer
COPY setup.py README.md ./
COPY trainer/ trainer/
COPY serving/ serving/
# Installed as root into the system site-packages; the job runs as uid 1000,
# which can read but not modify them. --no-build-isolation: built with the
# locked setuptools, not one fetched for the build.
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
 && pip check

USER 1000:1000
WORKDIR /home/trainer
ENTRYPOINT ["tini", "--", "python", "-m", "trainer.task"]
