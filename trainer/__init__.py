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
  storage       the one interface to local and gs:// paths: checks, JSON, versions, publishing
  versions      the conventions of a model base path shared by storage's back ends
  gcs           google-cloud-storage: the client, preflight checks, listing, error classes
  gcs_publish   publishing a version to GCS for TF Serving, and sweeping leftovers
  synthetic     learnable synthetic data in TFDS and image-folder form
  task          the command line (`python -m trainer.task`)
"""

__version__ = "0.1.0"
