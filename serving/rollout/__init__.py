"""Roll a published model version out through TF Serving's labels: evaluate, promote, roll back.

  python -m serving.rollout evaluate --model cifar10 --candidate 7 \
      --config gs://BUCKET/serving/models.config --server tf-serving:8500 \
      --data gs://BUCKET/tensorflow_datasets --split test
  python -m serving.rollout promote  ...the same flags... [--significance 0.05] [--max-p99-ms 200]
  python -m serving.rollout rollback --model cifar10 --config ... --server ... [--to 6]

(`cnn-rollout` is the same command, installed by setup.py.)

First, with nothing changed yet: the held-out split is read, version N must be
published complete, and the data must be what N's and stable's exports say
they were trained on (image shape, class names). Then evaluate lists
version N in models.config (`specific` versions), waits until
the server reports it AVAILABLE, points `canary` at it and waits until canary
answers with it, then sends the held-out split (read by trainer.data, as
training reads it) through `canary` and `stable`, in requests of at most 64
images. It reports per label the accuracy with its 95% Wilson interval,
per-class accuracy and p50/p99 latency per request, and, on the same images,
the disagreements and the exact McNemar test.

promote does the same, then moves `stable` to the candidate unless the
candidate is shown worse: the one-sided exact McNemar p(candidate worse) is
below --significance, or its p99 exceeds --max-p99-ms. A tie within noise is
promoted (decision.py). Refused, the candidate is withdrawn: models.config
goes back as it was, but with the candidate unlisted and canary on stable
even where an earlier evaluate had listed it and moved canary, and the tool
waits until canary answers with stable's version. rollback moves `stable`
back to the version it replaced (from the records, or --to N), which the
server must still report AVAILABLE.

Every change goes through the models.config TF Serving polls, written whole
and atomically, one step at a time in the order TF Serving accepts, each
waited for (--timeout-s) until the server reports it. No reload RPC: the
client has none, and the cluster's proxy refuses it. Any failure, Ctrl-C
included, puts models.config back as it was: `stable` moves only when the
rule promoted.

Each decision writes a JSON record (record.py) to --records, by default
BASE_PATH/evaluations/ beside the versions, never inside one.

Exit codes (errors are one line on stderr, `error: ` or `refused: `):

  | code | meaning |
  | ---- | ------- |
  | 0    | evaluated, promoted, or rolled back |
  | 1    | unexpected failure (a bug): traceback |
  | 2    | usage: bad flags, a models.config the tool cannot manage, data it cannot read or that do not fit the model, a candidate that is not published or is already stable, storage it may not read (a permission, a malformed version or record file) |
  | 3    | refused: the candidate is shown worse (or too slow), or there is no loaded version to roll back to; stable unchanged |
  | 4    | a step failed: the candidate did not load or was unloaded, a label moved, the server did not report a step within --timeout-s, models.config could not be written, storage unreachable before any step (nothing changed: run it again); stable unchanged |
  | 69   | the server could not be reached |

The package, one concern per module:

  errors.py         RolloutError and its subclasses, exit codes
  stats.py          Wilson interval, exact McNemar test, percentiles (pure)
  served_config.py  models.config: parse, edit, write atomically (local or gs://)
  server.py         what TF Serving reports (through serving.client), and waiting for it
  data.py           the held-out split, through trainer.data
  candidate.py      before any step: the version to evaluate (N, latest, next), the data's fit
  evaluation.py     the split through both labels, paired figures
  decision.py       the promotion rule (pure)
  steps.py          evaluate, promote, rollback: the ordered, reported steps
  record.py         the evaluation record, beside the versions
  cli.py            flags, the report, exit codes

May import: serving.client, and trainer.data, trainer.config, trainer.errors,
trainer.storage (the training's own data and storage code). serving.client
never imports this package: REST clients need no TensorFlow.
"""
