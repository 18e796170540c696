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


def validate(*paths: str, **run_kwargs) -> subprocess.CompletedProcess:
  """Runs `kubernetes-validate --strict` on the manifest files `paths`; the caller asserts."""
  return subprocess.run([tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION,
                         *map(str, paths)], capture_output=True, text=True, **run_kwargs)
