"""cnn-trainer: the TensorFlow CNN tutorial grown into a distributed training job.

Modules, one responsibility each:
  config        typed configuration and named presets
  data          TFDS and image-folder input pipelines
  model         the CNN
  distribution  strategy and cluster (TF_CONFIG, chief, per-worker paths)
  train         the custom training loop, checkpoints, TensorBoard
  reporting     evaluation figures and metrics.json
  export        the SavedModel TF Serving loads
  storage       local / gs:// file access and safe publishing
  gcs           google-cloud-storage: preflight checks and ordered publishing for TF Serving
  synthetic     learnable synthetic data in TFDS and image-folder form
  task          the command line (`python -m trainer.task`)
"""

__version__ = "0.1.0"
