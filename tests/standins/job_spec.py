"""What the simulated Job controller accepts: a batch/v1 Indexed Job spec, validated.

`validate` refuses a spec the API server would refuse (`InvalidJob`, its 422
Invalid, listing every error as the API server does: `api_errors`) and one
that uses a field or value `standins.job_controller` does not simulate
(NotImplementedError), so the simulator is never kinder than the real
controller. Sources: kubernetes/kubernetes pkg/apis/batch/validation/validation.go
and https://kubernetes.io/docs/concepts/workloads/controllers/job/.
"""

from __future__ import annotations

UNLIMITED = 2147483647  # backoffLimit's default when backoffLimitPerIndex is set
# Spec fields simulated; others are refused unless they hold their default.
_SIMULATED = {"completionMode", "completions", "parallelism", "backoffLimitPerIndex", "backoffLimit",
              "maxFailedIndexes", "podReplacementPolicy", "podFailurePolicy", "template",
              "activeDeadlineSeconds"}
_DEFAULTS_ONLY = {"suspend": False, "manualSelector": False}


class InvalidJob(ValueError):
  """A Job the API server would refuse (422 Invalid)."""


# pkg/apis/batch/validation/validation.go's limits (its const block).
MAX_POD_FAILURE_POLICY_RULES = 20
MAX_ON_EXIT_CODES_VALUES = 255
MAX_ON_POD_CONDITIONS_PATTERNS = 20
_ACTIONS = ("Count", "FailIndex", "FailJob", "Ignore")
_OPERATORS = ("In", "NotIn")
_CONDITION_STATUSES = ("False", "True", "Unknown")
_NONNEGATIVE = ("parallelism", "completions", "activeDeadlineSeconds", "backoffLimit",
                "ttlSecondsAfterFinished", "backoffLimitPerIndex", "maxFailedIndexes")


def api_errors(spec: dict) -> list[str]:
  """What the API server says about a Job spec: every error, as `kubectl apply` lists them.

  Source: kubernetes/kubernetes pkg/apis/batch/validation/validation.go (release
  1.31 and later), validateJobSpec, validatePodFailurePolicy,
  validatePodFailurePolicyRule, validatePodFailurePolicyRuleOnExitCodes,
  validatePodFailurePolicyRuleOnPodConditions and validatePodReplacementPolicy.
  The pod template's own validation (ValidatePodTemplateSpec) is left to
  kubernetes-validate in tests/test_manifests.py.
  """
  errors = []
  for name in _NONNEGATIVE:
    if name in spec and spec[name] < 0:
      errors.append(f"spec.{name}: Invalid value: {spec[name]}: must be greater than or equal to 0")
  if "maxFailedIndexes" in spec and "backoffLimitPerIndex" not in spec:
    errors.append("spec.backoffLimitPerIndex: Required value: when maxFailedIndexes is specified")
  indexed = spec.get("completionMode", "NonIndexed") == "Indexed"
  if indexed:
    if "completions" not in spec:
      errors.append("spec.completions: Required value: when completion mode is Indexed")
    elif spec.get("maxFailedIndexes", 0) > spec["completions"]:
      errors.append(f"spec.maxFailedIndexes: Invalid value: {spec['maxFailedIndexes']}: "
                    "must be less than or equal to completions")
  else:
    for name in ("backoffLimitPerIndex", "maxFailedIndexes"):
      if name in spec:
        errors.append(f"spec.{name}: Invalid value: {spec[name]}: requires indexed completion mode")
  pod = spec.get("template", {}).get("spec", {})
  names = {c.get("name") for c in pod.get("containers", []) + pod.get("initContainers", [])}
  policy = spec.get("podFailurePolicy")
  if policy is not None:
    rules = policy.get("rules", [])
    if len(rules) > MAX_POD_FAILURE_POLICY_RULES:
      errors.append(f"spec.podFailurePolicy.rules: Too many: {len(rules)}: must have at most "
                    f"{MAX_POD_FAILURE_POLICY_RULES} items")
    for i, rule in enumerate(rules):
      errors += _rule_errors(spec, rule, f"spec.podFailurePolicy.rules[{i}]", names)
  replacement = spec.get("podReplacementPolicy")
  if replacement is not None:
    allowed = ("Failed",) if policy is not None else ("Failed", "TerminatingOrFailed")
    if replacement not in allowed:
      errors.append(f'spec.podReplacementPolicy: Unsupported value: "{replacement}": supported '
                    f"values: {', '.join(repr(a) for a in allowed)}")
  restart = pod.get("restartPolicy", "")
  if restart in ("", "Always"):
    errors.append('spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never"')
  elif restart not in ("OnFailure", "Never"):
    errors.append(f'spec.template.spec.restartPolicy: Unsupported value: "{restart}"')
  elif policy is not None and restart != "Never":
    errors.append(f'spec.template.spec.restartPolicy: Invalid value: "{restart}": only "Never" is '
                  "supported when podFailurePolicy is specified (restartPolicy: Never)")
  return errors


def _rule_errors(spec: dict, rule: dict, path: str, names: set) -> list[str]:
  errors = []
  action = rule.get("action", "")
  if not action:
    errors.append(f"{path}.action: Required value: valid values: {list(_ACTIONS)}")
  elif action == "FailIndex":
    if "backoffLimitPerIndex" not in spec:
      errors.append(f'{path}.action: Invalid value: "FailIndex": requires the backoffLimitPerIndex to be set')
  elif action not in _ACTIONS:
    errors.append(f'{path}.action: Unsupported value: "{action}": supported values: {list(_ACTIONS)}')
  codes, conditions = rule.get("onExitCodes"), rule.get("onPodConditions") or []
  if codes is not None:
    errors += _exit_codes_errors(codes, f"{path}.onExitCodes", names)
  if len(conditions) > MAX_ON_POD_CONDITIONS_PATTERNS:
    errors.append(f"{path}.onPodConditions: Too many: {len(conditions)}: must have at most "
                  f"{MAX_ON_POD_CONDITIONS_PATTERNS} items")
  for j, pattern in enumerate(conditions):
    status = pattern.get("status", "")
    if status not in _CONDITION_STATUSES:
      errors.append(f"{path}.onPodConditions[{j}].status: " + (
          "Required value" if not status else f'Unsupported value: "{status}"'))
  if codes is not None and conditions:
    errors.append(f"{path}: Invalid value: specifying both OnExitCodes and OnPodConditions is not supported")
  if codes is None and not conditions:
    errors.append(f"{path}: Invalid value: specifying one of OnExitCodes and OnPodConditions is required")
  return errors


def _exit_codes_errors(codes: dict, path: str, names: set) -> list[str]:
  errors = []
  operator = codes.get("operator", "")
  if operator not in _OPERATORS:
    errors.append(f"{path}.operator: " + ("Required value" if not operator
                                          else f'Unsupported value: "{operator}"'))
  if codes.get("containerName") is not None and codes["containerName"] not in names:
    errors.append(f'{path}.containerName: Invalid value: "{codes["containerName"]}": must be one of '
                  "the container or initContainer names in the pod template")
  values = codes.get("values") or []
  if not values:
    errors.append(f"{path}.values: Invalid value: []: at least one value is required")
  elif len(values) > MAX_ON_EXIT_CODES_VALUES:
    errors.append(f"{path}.values: Too many: {len(values)}: must have at most "
                  f"{MAX_ON_EXIT_CODES_VALUES} items")
  seen = set()
  for j, value in enumerate(values):
    if operator == "In" and value == 0:
      errors.append(f"{path}.values[{j}]: Invalid value: 0: must not be 0 for the In operator")
    if value in seen:
      errors.append(f"{path}.values[{j}]: Duplicate value: {value}")
    seen.add(value)
  if any(a > b for a, b in zip(values, values[1:])):
    errors.append(f"{path}.values: Invalid value: {values}: must be ordered")
  return errors


def validate(spec: dict) -> None:
  """Refuses what the API server refuses, then what is not simulated.

  InvalidJob lists every error `api_errors` finds, as the API server's 422
  does. Then NotImplementedError for a field or value the simulator does not
  simulate; docs #pod-failure-policy and #backoff-limit-per-index
  (backoffLimit defaults to unlimited with backoffLimitPerIndex). Either
  backoffLimitPerIndex or the job-wide backoffLimit (JobSet's child Jobs,
  overlays/jobset) is simulated, not both.
  """
  errors = api_errors(spec)
  if errors:
    raise InvalidJob("The Job is invalid:\n* " + "\n* ".join(errors))
  for field, value in spec.items():
    if field not in _SIMULATED and _DEFAULTS_ONLY.get(field, object()) != value:
      raise NotImplementedError(f"Job spec field {field!r} is not simulated")
  if spec.get("completionMode") != "Indexed":
    raise NotImplementedError("completionMode: only Indexed is simulated")
  if "backoffLimitPerIndex" in spec and spec.get("backoffLimit", UNLIMITED) != UNLIMITED:
    raise NotImplementedError("backoffLimit together with backoffLimitPerIndex is not simulated")
  pod = spec["template"]["spec"]
  if len(pod["containers"]) != 1 or pod.get("initContainers"):
    raise NotImplementedError("only pods with one container and no init containers are simulated")
  replacement = spec.get("podReplacementPolicy", "Failed")
  if replacement != "Failed":
    raise NotImplementedError(f"podReplacementPolicy: {replacement} is not simulated")
  if pod.get("restartPolicy") != "Never":
    raise NotImplementedError("restartPolicy: only Never is simulated (containers restart in place)")
  for i, rule in enumerate((spec.get("podFailurePolicy") or {}).get("rules", [])):
    for pattern in rule.get("onPodConditions", []):
      if pattern["type"] != "DisruptionTarget":
        raise NotImplementedError(f"rules[{i}]: only the DisruptionTarget condition is simulated")
