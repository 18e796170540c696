"""Where the job runs: which worker this is, which strategy, where it may write.

  resolver      which worker this is: the cluster from the environment, parsed and checked
  distribution  the strategy, rendezvous, per-worker paths, lost peers, the final barrier
  kubernetes    TF_CONFIG from an Indexed Job's or a JobSet's pod identity, parsed
  vertex        Vertex AI's CLUSTER_SPEC and AIP_* directories, parsed

The environment itself is read once, by trainer.environment, and passed in.
May import: trainer.environment, trainer.config, trainer.errors.
"""
