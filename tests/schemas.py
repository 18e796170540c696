"""Kubernetes schema validation for every test that checks manifests: one tool, one version.

`kubernetes-validate --strict` checks each resource against the official
OpenAPI schemas of KUBERNETES_VERSION, offline; --strict also fails unknown
fields, which `kubectl apply` would otherwise drop silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

KUBERNETES_VERSION = "1.33.0"


def tool(name: str) -> str:
  """A console script of the test environment: on PATH, or beside this Python."""
  return shutil.which(name) or os.path.join(os.path.dirname(sys.executable), name)


def validate(*paths: str, kubernetes_version: str = KUBERNETES_VERSION,
             **run_kwargs) -> subprocess.CompletedProcess:
  """Runs `kubernetes-validate --strict` on the manifest files `paths`; the caller asserts."""
  return subprocess.run([tool("kubernetes-validate"), "--strict", "-k", kubernetes_version,
                         *map(str, paths)], capture_output=True, text=True, **run_kwargs)


# ------------------------------------------------------------------ custom resources
# kubernetes-validate knows the core kinds only. The kinds of JobSet and Kueue are
# checked against the CRDs of the releases docs/kubernetes.md installs, vendored
# unchanged in tests/crds/ (its README names each source).
CRDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crds")
JOBSET_VERSION, KUEUE_VERSION = "v0.12.0", "v0.19.2"
CUSTOM_KINDS = {
    ("jobset.x-k8s.io", "JobSet"): f"jobset-{JOBSET_VERSION}/jobset.x-k8s.io_jobsets.yaml",
    ("kueue.x-k8s.io", "ResourceFlavor"): f"kueue-{KUEUE_VERSION}/kueue.x-k8s.io_resourceflavors.yaml",
    ("kueue.x-k8s.io", "ClusterQueue"): f"kueue-{KUEUE_VERSION}/kueue.x-k8s.io_clusterqueues.yaml",
    ("kueue.x-k8s.io", "LocalQueue"): f"kueue-{KUEUE_VERSION}/kueue.x-k8s.io_localqueues.yaml",
}


def is_custom(doc: dict) -> bool:
  return (doc["apiVersion"].split("/")[0], doc["kind"]) in CUSTOM_KINDS


def strict(schema):
  """The schema with unknown fields refused, as the API server prunes them and --strict refuses them.

  Every object schema that lists `properties` gets `additionalProperties: false`,
  unless it keeps unknown fields (x-kubernetes-preserve-unknown-fields) or already
  says what other keys may hold (a map's additionalProperties).
  """
  if isinstance(schema, list):
    return [strict(s) for s in schema]
  if not isinstance(schema, dict):
    return schema
  out = {k: strict(v) for k, v in schema.items()}
  if ("properties" in out and "additionalProperties" not in out
      and not out.get("x-kubernetes-preserve-unknown-fields")):
    out["additionalProperties"] = False
  return out


def crd_schema(doc: dict) -> dict:
  """The strict openAPIV3Schema the pinned CRD serves for `doc`'s apiVersion; KeyError if none."""
  import yaml  # pylint: disable=import-outside-toplevel
  group, version = doc["apiVersion"].split("/")
  with open(os.path.join(CRDS, CUSTOM_KINDS[(group, doc["kind"])]), encoding="utf-8") as f:
    crd = yaml.safe_load(f)
  (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
  return strict(served["schema"]["openAPIV3Schema"])


def validate_custom(doc: dict) -> list[str]:
  """Why `doc` (a JobSet or Kueue object) fails its CRD's schema: [] when it passes.

  Checks the structural schema (types, enums, required fields, patterns, unknown
  fields); not the CEL rules (x-kubernetes-validations) or the webhooks, which only
  a cluster runs.
  """
  import jsonschema  # pylint: disable=import-outside-toplevel
  validator = jsonschema.Draft7Validator(crd_schema(doc))
  return [f"{doc['kind']} {doc['metadata'].get('name')}: {'.'.join(map(str, e.absolute_path)) or '(root)'}: "
          f"{e.message}" for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.path)))]
