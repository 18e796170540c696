"""Storage: local paths and gs:// behind one interface.

  api          the interface callers use; it only routes to a back end
  local        the local-file-system back end
  gcs          the GCS back end: the client, one helper for calls, preflight, listing
  gcs_publish  GCS publishing of a version for TF Serving, and sweeping leftovers
  versions     the conventions every back end shares (version names, staging, staleness)
  lockstore    create-only / compare-and-swap storage of one small object
  joblock      the chief's lease lock on the job directory
  jobdir       the job directory's layout, and what a finished job must hold

Back ends import nothing from the interface. May import: trainer.environment,
trainer.errors.
"""
