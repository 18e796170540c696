"""Where the job runs: which worker this is, which strategy, where it may write.

  distribution  the strategy and cluster (TF_CONFIG, chief, per-worker paths, lost peers)
  kubernetes    TF_CONFIG from an Indexed Job's or a JobSet's pod identity, parsed
  vertex        Vertex AI's CLUSTER_SPEC and AIP_* directories, parsed

The environment itself is read once, by trainer.environment, and passed in.
May import: trainer.environment, trainer.config, trainer.errors.
"""
