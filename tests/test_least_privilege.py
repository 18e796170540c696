"""Each workload has its own identity with the least access, and the docs' gcloud commands grant exactly that.

No Google Cloud project runs here, so the commands of docs/kubernetes.md's
"Set-up on GKE" step 2 (and docs/vertex.md's) are parsed and compared with the
manifests: every Kubernetes service account's Google service account is
created and bound for Workload Identity in the kustomization's namespace, and
the IAM conditions are evaluated, as Cloud Storage evaluates them, against
requests for object names: the trainer can write only under JOB_DIR and
PUBLISH_DIR, Vertex AI's account only under its output prefix, nobody else at
all, and each reader only reads its prefix.
"""

import glob
import os
import re
import shlex

import pytest
import yaml

from conftest import REPO

K8S = os.path.join(REPO, "k8s")
KUBERNETES_DOC = open(os.path.join(REPO, "docs", "kubernetes.md"), encoding="utf-8").read()
VERTEX_DOC = open(os.path.join(REPO, "docs", "vertex.md"), encoding="utf-8").read()
WI_ANNOTATION = "iam.gke.io/gcp-service-account"
# https://cloud.google.com/iam/docs/conditions-attribute-reference: resource.name
# of an object, and the API attribute carrying the prefix of a list request.
CONDITION = ('resource.name.startsWith("projects/_/buckets/{bucket}/objects/{prefix}") || '
             'api.getAttribute("storage.googleapis.com/objectListPrefix", "").startsWith("{prefix}")')
# A writer's prefix: the same, plus the directory's own name (docs/kubernetes.md, "Who may write what").
WRITE_CONDITION = 'resource.name == "projects/_/buckets/{bucket}/objects/{name}" || ' + CONDITION
# The permissions of the predefined roles the docs grant, as far as objects go
# (https://cloud.google.com/storage/docs/access-control/iam-roles).
ROLE_PERMISSIONS = {
    "roles/storage.objectViewer": {"get", "list"},
    "roles/storage.objectUser": {"create", "delete", "get", "list", "update", "restore"},
    "roles/storage.objectCreator": {"create"},
    "roles/storage.objectAdmin": {"create", "delete", "get", "list", "update", "restore", "setIamPolicy"},
}
WRITES = ("create", "delete", "update")


def _docs():
  docs = []
  for path in sorted(glob.glob(os.path.join(K8S, "*.yaml"))):
    with open(path, encoding="utf-8") as f:
      docs += [(os.path.basename(path), d) for d in yaml.safe_load_all(f) if d]
  return docs


def _pod_specs():
  """(file, workload name, pod spec) for every pod template in k8s/*.yaml."""
  for name, doc in _docs():
    if doc["kind"] in ("Job", "Deployment"):
      yield name, doc["metadata"]["name"], doc["spec"]["template"]["spec"]
    elif doc["kind"] == "TFJob":
      for role, replica in doc["spec"]["tfReplicaSpecs"].items():
        yield name, f"{doc['metadata']['name']}/{role}", replica["template"]["spec"]


def _service_accounts():
  return {d["metadata"]["name"]: (name, d) for name, d in _docs() if d["kind"] == "ServiceAccount"}


def _workload(kind, name):
  (doc,) = [d for _, d in _docs() if d["kind"] == kind and d["metadata"]["name"] == name]
  return doc


def _settings():
  (doc,) = [d for _, d in _docs() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "cnn-trainer-settings"]
  return doc["data"]


def _gcs_prefix(url):
  """gs://BUCKET/a/b -> (BUCKET, "a/b/"): the trailing slash keeps a/bc out."""
  match = re.fullmatch(r"gs://([^/]+)/(.+?)/?", url)
  return match.group(1), match.group(2) + "/"


def _readme_commands(doc=KUBERNETES_DOC, heading="## Set-up on GKE"):
  """The gcloud commands of a doc's first bash block after `heading`, each as an argv list."""
  section = doc[doc.index(heading):]
  block = re.search(r"```bash\n(.*?)\n```", section, re.S).group(1)
  commands = []
  for line in block.replace("\\\n", " ").splitlines():
    argv = shlex.split(line, comments=True)
    if argv[:1] == ["gcloud"]:
      commands.append(argv)
  return commands


def _flags(argv):
  """{flag: value} for `--flag value` and `--flag=value`; positional arguments under ''."""
  flags, positional, i = {}, [], 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith("--"):
      if "=" in arg:
        key, value = arg[2:].split("=", 1)
      elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
        key, value = arg[2:], argv[i + 1]
        i += 1
      else:
        key, value = arg[2:], True
      flags[key] = value
    else:
      positional.append(arg)
    i += 1
  flags[""] = positional
  return flags


def _condition(value):
  """gcloud's --condition KEY=VALUE list, with its ^D^ alternative delimiter.

  https://cloud.google.com/sdk/gcloud/reference/topic/escaping
  """
  separator = ","
  match = re.match(r"\^(.)\^", value)
  if match:
    separator, value = match.group(1), value[match.end():]
  return dict(item.split("=", 1) for item in value.split(separator))


def _bucket_bindings(commands=None):
  """{Google service account email: [(bucket, role, condition expression or None)]}."""
  bindings = {}
  for argv in commands if commands is not None else _readme_commands():
    if argv[1:4] == ["storage", "buckets", "add-iam-policy-binding"]:
      flags = _flags(argv[4:])
      member = flags["member"]
      assert member.startswith("serviceAccount:"), member
      condition = _condition(flags["condition"])["expression"] if "condition" in flags else None
      bindings.setdefault(member.split(":", 1)[1], []).append((flags[""][0], flags["role"], condition))
  return bindings


def _namespace():
  """The namespace `kubectl apply -k k8s/` puts everything in: the kustomization's one setting."""
  with open(os.path.join(K8S, "kustomization.yaml"), encoding="utf-8") as f:
    return yaml.safe_load(f)["namespace"]


def _term(term, name, list_prefix):
  """One `||` term of a condition, as Cloud Storage evaluates it for a request.

  name: the object's name for a request on an object, None for a list request
  (whose resource.name is the bucket's); list_prefix: the list request's prefix.
  Only the forms the docs use are known: anything else fails the test.
  """
  patterns = {
      r'resource\.name\.startsWith\("(.*)"\)': lambda v, resource: resource.startswith(v),
      r'resource\.name == "(.*)"': lambda v, resource: resource == v,
      r'api\.getAttribute\("storage\.googleapis\.com/objectListPrefix", ""\)\.startsWith\("(.*)"\)':
          lambda v, resource: (list_prefix or "").startswith(v),
  }
  for pattern, evaluate in patterns.items():
    match = re.fullmatch(pattern, term.strip())
    if match:
      return evaluate(match.group(1), name)
  raise AssertionError(f"condition term this test cannot evaluate: {term}")


def _allowed(bindings, email, permission, bucket, name=None, list_prefix=None):
  """Whether `email` holds `permission` for an object (name) or a list request (list_prefix) in `bucket`."""
  resource = f"projects/_/buckets/{bucket}" + (f"/objects/{name}" if name is not None else "")
  for binding_bucket, role, condition in bindings.get(email, []):
    if binding_bucket != f"gs://{bucket}" or permission not in ROLE_PERMISSIONS[role]:
      continue
    if condition is None or any(_term(term, resource, list_prefix) for term in condition.split("||")):
      return True
  return False


def _google_account(service_account_name):
  return _service_accounts()[service_account_name][1]["metadata"]["annotations"][WI_ANNOTATION]


@pytest.mark.parametrize("file, workload, spec", list(_pod_specs()), ids=lambda v: v if isinstance(v, str) else "")
def test_no_pod_mounts_a_kubernetes_api_token(file, workload, spec):
  assert spec.get("automountServiceAccountToken") is False, f"{file}: {workload}"


def test_no_service_account_automounts_its_token():
  for name, (file, account) in _service_accounts().items():
    assert account.get("automountServiceAccountToken") is False, f"{file}: {name}"


def test_every_deployment_runs_as_its_own_service_account_defined_beside_it():
  accounts = _service_accounts()
  deployments = [(f, d) for f, d in _docs() if d["kind"] == "Deployment"]
  assert deployments
  names = [d["spec"]["template"]["spec"].get("serviceAccountName") for _, d in deployments]
  assert len(set(names)) == len(names)
  for (file, deployment), name in zip(deployments, names):
    assert name and name != "cnn-trainer", f"{file}: {deployment['metadata']['name']} runs as {name}"
    assert accounts[name][0] == file, f"{name} is not defined in {file}"
  emails = [account["metadata"]["annotations"][WI_ANNOTATION] for _, account in accounts.values()]
  assert len(set(emails)) == len(emails), "two Kubernetes service accounts share a Google one"


def test_readme_creates_and_binds_every_google_service_account():
  commands = [" ".join(argv) for argv in _readme_commands()]
  for name, (file, account) in _service_accounts().items():
    email = account["metadata"]["annotations"][WI_ANNOTATION]
    short, domain = email.split("@")
    project = domain.split(".iam.gserviceaccount.com")[0]
    assert f"gcloud iam service-accounts create {short}" in commands, email
    binding = (f"gcloud iam service-accounts add-iam-policy-binding {email} --role roles/iam.workloadIdentityUser "
               f"--member serviceAccount:{project}.svc.id.goog[{_namespace()}/{name}]")
    assert binding in commands, f"no Workload Identity binding for {file}: {name}"


def test_readme_bucket_has_uniform_access_which_conditions_need():
  # https://cloud.google.com/storage/docs/access-control/iam#conditions
  creates = [argv for argv in _readme_commands() if argv[1:4] == ["storage", "buckets", "create"]]
  assert len(creates) == 1 and "uniform-bucket-level-access" in _flags(creates[0][4:])


def _accounts():
  trainer = _google_account(_workload("Job", "cnn-trainer")["spec"]["template"]["spec"]["serviceAccountName"])
  serving = _google_account(_workload("Deployment", "tf-serving")["spec"]["template"]["spec"]["serviceAccountName"])
  board = _google_account(
      _workload("Deployment", "cnn-trainer-tensorboard")["spec"]["template"]["spec"]["serviceAccountName"])
  return trainer, serving, board


def test_the_trainer_writes_only_under_job_dir_and_publish_dir_and_reads_data_dir():
  bindings = _bucket_bindings()
  settings = _settings()
  trainer, _, _ = _accounts()
  bucket, job = _gcs_prefix(settings["JOB_DIR"])
  assert _gcs_prefix(settings["PUBLISH_DIR"])[0] == _gcs_prefix(settings["DATA_DIR"])[0] == bucket
  _, models = _gcs_prefix(settings["PUBLISH_DIR"])
  _, datasets = _gcs_prefix(settings["DATA_DIR"])
  # Every write of the trainer, by object name.
  for name in (f"{job}lock.json", f"{job}checkpoints/ckpt-1.index", f"{job}logs/train/events.out",
               f"{job}export/cifar10/1/saved_model.pb", f"{models}cifar10/1/saved_model.pb",
               f"{models}cifar10/.staging-1/variables/variables.index"):
    for permission in (*WRITES, "get"):
      assert _allowed(bindings, trainer, permission, bucket, name), (permission, name)
  # Nothing else in the bucket, however close its name.
  outside = [f"{datasets}cifar10/3.0.2/cifar10-train.tfrecord-00000-of-00001", "other-team/model.pb",
             f"{job[:-1]}-other/lock.json", f"{models[:-1]}-old/cifar10/1/saved_model.pb",
             f"{job.split('/')[0]}/mnist/lock.json", "lock.json", job.split("/")[0] + "/"]
  for name in outside:
    for permission in WRITES:
      assert not _allowed(bindings, trainer, permission, bucket, name), (permission, name)
  assert _allowed(bindings, trainer, "get", bucket, f"{datasets}cifar10/3.0.2/dataset_info.json")
  assert not _allowed(bindings, trainer, "get", bucket, "other-team/secret.csv")
  # Listing: by the prefix asked for; the whole bucket and the parents are refused.
  for prefix in (job, f"{job}checkpoints/", models, f"{models}cifar10/", datasets):
    assert _allowed(bindings, trainer, "list", bucket, list_prefix=prefix), prefix
  for prefix in ("", job.split("/")[0] + "/", "other-team/"):
    assert not _allowed(bindings, trainer, "list", bucket, list_prefix=prefix), prefix
  # TensorFlow's directory walk asks for JOB_DIR's own name (see the docs): a 404, not a 403.
  assert _allowed(bindings, trainer, "get", bucket, job[:-1])


def test_the_trainers_bindings_are_exactly_the_prefix_scoped_ones():
  bindings = _bucket_bindings()
  settings = _settings()
  trainer, _, _ = _accounts()
  bucket, job = _gcs_prefix(settings["JOB_DIR"])
  _, models = _gcs_prefix(settings["PUBLISH_DIR"])
  _, datasets = _gcs_prefix(settings["DATA_DIR"])
  assert sorted(bindings[trainer]) == sorted([
      (f"gs://{bucket}", "roles/storage.objectUser", WRITE_CONDITION.format(bucket=bucket, name=p[:-1], prefix=p))
      for p in (job, models)] + [
      (f"gs://{bucket}", "roles/storage.objectViewer", CONDITION.format(bucket=bucket, prefix=datasets))])


def test_only_the_trainer_can_write_and_the_readers_see_only_their_prefixes():
  bindings = _bucket_bindings()
  settings = _settings()
  trainer, serving, board = _accounts()
  bucket, models = _gcs_prefix(settings["PUBLISH_DIR"])
  for email, roles in bindings.items():
    if email != trainer:
      assert not any(ROLE_PERMISSIONS[role] & set(WRITES) for _, role, _ in roles), email
  assert bindings[serving] == [(f"gs://{bucket}", "roles/storage.objectViewer",
                                CONDITION.format(bucket=bucket, prefix=models))]
  assert _allowed(bindings, serving, "get", bucket, f"{models}cifar10/1/saved_model.pb")
  assert not _allowed(bindings, serving, "get", bucket, _gcs_prefix(settings["JOB_DIR"])[1] + "lock.json")
  # TensorBoard's --logdir is $(JOB_DIR)/logs (tests/test_manifests.py checks that).
  bucket, logs = _gcs_prefix(settings["JOB_DIR"] + "/logs")
  assert bindings[board] == [(f"gs://{bucket}", "roles/storage.objectViewer",
                              CONDITION.format(bucket=bucket, prefix=logs))]
  assert set(bindings) == {trainer, serving, board}


def _vertex_spec(name):
  with open(os.path.join(REPO, "vertex", name), encoding="utf-8") as f:
    return yaml.safe_load(f)


def test_vertex_ai_runs_as_its_own_account_writing_only_under_its_output_prefix():
  """docs/vertex.md grants the account vertex/*.yaml name; it writes only where baseOutputDirectory points."""
  commands = _readme_commands(VERTEX_DOC, "## Service account")
  bindings = _bucket_bindings(commands)
  specs = [_vertex_spec(n) for n in ("custom-job.yaml", "custom-job-multi-worker.yaml")]
  (email,) = {spec["serviceAccount"] for spec in specs}
  assert email not in _bucket_bindings(), "Vertex AI's account is not the trainer's GKE one"
  assert f"gcloud iam service-accounts create {email.split('@')[0]}" in [" ".join(a) for a in commands]
  for spec in specs:
    bucket, output = _gcs_prefix(spec["baseOutputDirectory"]["outputUriPrefix"])
    for name in (f"{output}model/saved_model.pb", f"{output}checkpoints/ckpt-1.index", f"{output}lock.json"):
      for permission in (*WRITES, "get"):
        assert _allowed(bindings, email, permission, bucket, name), (permission, name)
    assert _allowed(bindings, email, "list", bucket, list_prefix=output)
    (data_dir,) = [a.split("=", 1)[1] for a in spec["workerPoolSpecs"][0]["containerSpec"]["args"]
                   if a.startswith("--data-dir=")]
    _, datasets = _gcs_prefix(data_dir)
    assert _allowed(bindings, email, "get", bucket, f"{datasets}cifar10/3.0.2/dataset_info.json")
    for name in (f"{datasets}cifar10/3.0.2/dataset_info.json", "models/cifar10/1/saved_model.pb",
                 "cnn-trainer/cifar10/lock.json"):
      for permission in WRITES:
        assert not _allowed(bindings, email, permission, bucket, name), (permission, name)


def test_tf_serving_has_a_disruption_budget_for_its_replicas():
  deployment = _workload("Deployment", "tf-serving")
  (budget,) = [d for _, d in _docs() if d["kind"] == "PodDisruptionBudget"]
  labels = deployment["spec"]["template"]["metadata"]["labels"]
  assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
  assert budget["spec"]["selector"] == deployment["spec"]["selector"]
  replicas = deployment["spec"]["replicas"]
  assert replicas >= 2
  allowed_down = budget["spec"].get("maxUnavailable", replicas - budget["spec"].get("minAvailable", replicas))
  assert 1 <= allowed_down < replicas  # drains can proceed, and one pod always serves


def test_readme_names_the_client_label_the_policy_uses():
  (policy,) = [d for _, d in _docs() if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "tf-serving"]
  (peer,) = [p for rule in policy["spec"]["ingress"] for p in rule["from"]]
  ((key, value),) = peer["podSelector"]["matchLabels"].items()
  assert f'`{key}: "{value}"`' in KUBERNETES_DOC
  assert "HandleReloadConfigRequest" in KUBERNETES_DOC and "Prometheus" in KUBERNETES_DOC
