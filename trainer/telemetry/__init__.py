"""What a run tells people: TensorBoard, progress, and the records the chief writes.

  summaries   TensorBoard writing (chief only)
  reporting   evaluation figures and tables for TensorBoard
  hparams     the HParams session (this run's configuration beside its results)
  progress    a bar per epoch on a terminal, log lines elsewhere
  profiling   --profile-steps: the trace for TensorBoard's Profile tab
  records     config.json and metrics.json

May import: trainer.storage.api, trainer.data.pipeline (its DatasetInfo), trainer.config, trainer.errors.
"""
