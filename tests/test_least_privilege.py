"""Each workload has its own identity with the least access, and the docs' gcloud commands grant exactly that.

No Google Cloud project runs here, so the commands of docs/kubernetes.md's
"Set-up on GKE" step 2 are parsed and compared with the manifests: every
Kubernetes service account's Google service account is created and bound for
Workload Identity, only the trainer can write, and the readers' IAM
conditions name the prefixes of the ConfigMap's paths.
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
WI_ANNOTATION = "iam.gke.io/gcp-service-account"
# https://cloud.google.com/iam/docs/conditions-attribute-reference: resource.name
# of an object, and the API attribute carrying the prefix of a list request.
CONDITION = ('resource.name.startsWith("projects/_/buckets/{bucket}/objects/{prefix}") || '
             'api.getAttribute("storage.googleapis.com/objectListPrefix", "").startsWith("{prefix}")')


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


def _readme_commands():
  """The gcloud commands of docs/kubernetes.md's GKE walkthrough, each as an argv list."""
  section = KUBERNETES_DOC[KUBERNETES_DOC.index("## Set-up on GKE"):]
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


def _bucket_bindings():
  """{Google service account email: [(bucket, role, condition expression or None)]}."""
  bindings = {}
  for argv in _readme_commands():
    if argv[1:4] == ["storage", "buckets", "add-iam-policy-binding"]:
      flags = _flags(argv[4:])
      member = flags["member"]
      assert member.startswith("serviceAccount:"), member
      condition = _condition(flags["condition"])["expression"] if "condition" in flags else None
      bindings.setdefault(member.split(":", 1)[1], []).append((flags[""][0], flags["role"], condition))
  return bindings


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
               f"--member serviceAccount:{project}.svc.id.goog[default/{name}]")
    assert binding in commands, f"no Workload Identity binding for {file}: {name}"


def test_readme_bucket_has_uniform_access_which_conditions_need():
  # https://cloud.google.com/storage/docs/access-control/iam#conditions
  creates = [argv for argv in _readme_commands() if argv[1:4] == ["storage", "buckets", "create"]]
  assert len(creates) == 1 and "uniform-bucket-level-access" in _flags(creates[0][4:])


def test_only_the_trainer_can_write_and_the_readers_see_only_their_prefixes():
  bindings = _bucket_bindings()
  settings = _settings()
  trainer = _google_account(_workload("Job", "cnn-trainer")["spec"]["template"]["spec"]["serviceAccountName"])
  serving = _google_account(_workload("Deployment", "tf-serving")["spec"]["template"]["spec"]["serviceAccountName"])
  board = _google_account(
      _workload("Deployment", "cnn-trainer-tensorboard")["spec"]["template"]["spec"]["serviceAccountName"])
  bucket, models = _gcs_prefix(settings["PUBLISH_DIR"])
  assert bindings[trainer] == [(f"gs://{bucket}", "roles/storage.objectAdmin", None)]
  assert bindings[serving] == [(f"gs://{bucket}", "roles/storage.objectViewer",
                                CONDITION.format(bucket=bucket, prefix=models))]
  # TensorBoard's --logdir is $(JOB_DIR)/logs (tests/test_manifests.py checks that).
  bucket, logs = _gcs_prefix(settings["JOB_DIR"] + "/logs")
  assert bindings[board] == [(f"gs://{bucket}", "roles/storage.objectViewer",
                              CONDITION.format(bucket=bucket, prefix=logs))]
  assert set(bindings) == {trainer, serving, board}


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
