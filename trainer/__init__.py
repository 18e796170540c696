"""cnn-trainer: the TensorFlow CNN tutorial grown into a distributed training job.

Entries (thin: they parse flags and call the library):
  task          the command line, `python -m trainer.task` (console script cnn-trainer)
  prepare       `python -m trainer.prepare`: an image folder into a prepared TFDS dataset
  synthetic     `python -m trainer.synthetic`: learnable synthetic data in TFDS form

On top, used by all:
  config        the typed configuration and its named presets
  errors        errors a user can cause, and the exit codes
  environment   the one reader of the process environment
  export        the SavedModel TF Serving loads

Packages, one concern each (their __init__ lists their modules and what they may import):
  data/         TFDS and image-folder sources, tf.data pipelines, synthetic data
  models/       the tutorial CNN and ResNet-20 behind --model
  training/     run(config, strategy=None, datasets=None), the plan, the loop, steps,
                checkpoints, preemption, metrics, optimizer, schedule
  telemetry/    TensorBoard, HParams, progress, profiling, config.json and metrics.json
  cluster/      strategy and cluster: TF_CONFIG, Indexed Job, Vertex AI
  storage/      local and gs:// behind one interface; publishing, the job-dir lock and layout

docs/architecture.md draws how a run flows through them.
"""

__version__ = "0.1.0"
