"""cnn-trainer: the TensorFlow CNN tutorial grown into a distributed training job.

Modules, one responsibility each:
  config        typed configuration and named presets
  data          TFDS and image-folder input pipelines
  model         the CNN
  distribution  strategy and cluster (TF_CONFIG, chief, per-worker paths, lost peers)
  train         the training run: resume, epochs, final evaluation, export, in order
  steps         the compiled train / eval / barrier functions under any strategy
  checkpoints   saving, and restoring the newest intact checkpoint
  preemption    SIGTERM as a request to checkpoint at a common step
  summaries     TensorBoard writing (chief only)
  metrics       loss / accuracy / confusion sums across replicas
  schedule      the learning-rate schedule
  reporting     evaluation figures and tables for TensorBoard
  jobdir        the job directory's layout; what a finished job must hold
  joblock       the chief's lease lock on the job directory
  lockstore     create-only / compare-and-swap storage of one small object, locally and on GCS
  records       config.json and metrics.json
  errors        errors a user can cause, and the exit codes
  export        the SavedModel TF Serving loads
  storage       local / gs:// file access and safe publishing
  gcs           google-cloud-storage: preflight checks and ordered publishing for TF Serving
  synthetic     learnable synthetic data in TFDS and image-folder form
  task          the command line (`python -m trainer.task`)
"""

__version__ = "0.1.0"
