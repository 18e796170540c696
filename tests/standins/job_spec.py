"""What the simulated Job controller accepts: a batch/v1 Indexed Job spec, validated.

`validate` refuses a spec the API server would refuse (`InvalidJob`, its 422
Invalid) and one that uses a field or value `standins.job_controller` does not
simulate (NotImplementedError), so the simulator is never kinder than the real
controller. Sources: kubernetes/kubernetes pkg/apis/batch/validation/validation.go
and https://kubernetes.io/docs/concepts/workloads/controllers/job/.
"""

from __future__ import annotations

UNLIMITED = 2147483647  # backoffLimit's default when backoffLimitPerIndex is set
# Spec fields simulated; others are refused unless they hold their default.
_SIMULATED = {"completionMode", "completions", "parallelism", "backoffLimitPerIndex",
              "maxFailedIndexes", "podReplacementPolicy", "podFailurePolicy", "template"}
_DEFAULTS_ONLY = {"backoffLimit": UNLIMITED, "suspend": False, "manualSelector": False}


class InvalidJob(ValueError):
  """A Job the API server would refuse (422 Invalid)."""


def validate(spec: dict) -> None:
  """Refuses what the API server refuses, and what is not simulated.

  Sources: pkg/apis/batch/validation/validation.go, validateJobSpec and
  validatePodFailurePolicy; docs #pod-failure-policy ("restartPolicy must be
  Never", "podReplacementPolicy must be Failed") and #backoff-limit-per-index
  (backoffLimit defaults to unlimited, FailIndex needs backoffLimitPerIndex).
  """
  for field, value in spec.items():
    if field not in _SIMULATED and _DEFAULTS_ONLY.get(field, object()) != value:
      raise NotImplementedError(f"Job spec field {field!r} is not simulated")
  if spec.get("completionMode") != "Indexed":
    raise NotImplementedError("completionMode: only Indexed is simulated")
  if "backoffLimitPerIndex" not in spec:
    raise NotImplementedError("backoffLimitPerIndex: the job-wide backoffLimit is not simulated")
  pod = spec["template"]["spec"]
  if len(pod["containers"]) != 1 or pod.get("initContainers"):
    raise NotImplementedError("only pods with one container and no init containers are simulated")
  policy = spec.get("podFailurePolicy")
  replacement = spec.get("podReplacementPolicy", "Failed")
  if policy is not None:
    if pod.get("restartPolicy") != "Never":
      raise InvalidJob("podFailurePolicy requires template.spec.restartPolicy: Never")
    if replacement != "Failed":
      raise InvalidJob("podFailurePolicy requires podReplacementPolicy: Failed")
  if replacement != "Failed":
    raise NotImplementedError(f"podReplacementPolicy: {replacement} is not simulated")
  if pod.get("restartPolicy") != "Never":
    raise NotImplementedError("restartPolicy: only Never is simulated (containers restart in place)")
  names = {c["name"] for c in pod["containers"]}
  for i, rule in enumerate((policy or {}).get("rules", [])):
    if rule["action"] not in ("FailJob", "FailIndex", "Ignore", "Count"):
      raise InvalidJob(f"rules[{i}].action: unknown {rule['action']!r}")
    if ("onExitCodes" in rule) == ("onPodConditions" in rule):
      raise InvalidJob(f"rules[{i}]: exactly one of onExitCodes and onPodConditions")
    codes = rule.get("onExitCodes")
    if codes:
      if codes.get("containerName") not in (None, *names):
        raise InvalidJob(f"rules[{i}].onExitCodes.containerName: no container {codes['containerName']!r}")
      if codes["operator"] not in ("In", "NotIn"):
        raise InvalidJob(f"rules[{i}].onExitCodes.operator: {codes['operator']!r}")
      if codes["operator"] == "In" and 0 in codes["values"]:
        raise InvalidJob(f"rules[{i}].onExitCodes.values: 0 is not allowed with In")
    for pattern in rule.get("onPodConditions", []):
      if pattern["type"] != "DisruptionTarget":
        raise NotImplementedError(f"rules[{i}]: only the DisruptionTarget condition is simulated")
