"""Training: the run from a configuration to an export, under any tf.distribute strategy.

  train        run(config, strategy=None, datasets=None): the plan, the lock, the strategy, the loop
  plan         what this process does, decided before any strategy: cluster, paths, data, checks
  loop         the training loop: epochs, evaluation, the chief's export, in order
  steps        the compiled train / eval / barrier functions
  checkpoints  saving, and restoring the newest intact checkpoint
  resume       whether this run's flags may resume a checkpoint (config.json's record)
  preemption   SIGTERM as a request to checkpoint at a common step
  metrics      loss / accuracy / confusion sums across replicas
  optimizer    the optimizer and its weight decay
  schedule     the learning-rate schedule
  precision    --mixed-precision: auto's choice by instruction set

May import: trainer.telemetry, trainer.storage.api, trainer.data.pipeline, trainer.cluster,
trainer.models, trainer.config, trainer.errors, trainer.environment.
"""
