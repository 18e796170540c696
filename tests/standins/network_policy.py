"""A strict evaluator of Kubernetes NetworkPolicy (networking.k8s.io/v1).

No cluster, and no CNI plugin that enforces policies, runs on the test
machines, so this module answers the question a CNI answers: may this pod open
a connection to that pod on this port? It reads policies as plain dicts, as
`yaml.safe_load` returns them from k8s/*.yaml.

Each rule is a small function that links the part of the Kubernetes
documentation it implements. The main page is DOCS; the API reference for the
fields is API. Things a policy cannot do (block a pod's own node, or
localhost) are out of scope here: a connection is always between two pods, or
from an IP address for `ipBlock`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Iterable, Mapping, Optional, Sequence

DOCS = "https://kubernetes.io/docs/concepts/services-networking/network-policies/"
API = "https://kubernetes.io/docs/reference/kubernetes-api/policy-resources/network-policy-v1/"
LABELS = "https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


class PolicyError(ValueError):
  """A policy the API server would reject, or one this evaluator cannot read."""


@dataclasses.dataclass(frozen=True)
class Pod:
  """A running pod, as NetworkPolicy sees it.

  Attributes:
    name: For messages only.
    labels: The pod's labels (its template's labels, for a controller's pods).
    namespace: The pod's namespace.
    ip: The pod's IP address, matched by `ipBlock` peers.
    ports: The containers' `ports` entries (`name`, `containerPort`,
      `protocol`), against which named ports in a policy are resolved.
  """
  name: str
  labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
  namespace: str = "default"
  ip: str = "10.0.0.1"
  ports: Sequence[Mapping] = ()


# --- Label selectors -------------------------------------------------------


def expression_matches(expression: Mapping, labels: Mapping[str, str]) -> bool:
  """One `matchExpressions` requirement.

  In: the label is present with one of the values. NotIn: the label is absent
  or has none of them. Exists / DoesNotExist: presence only, and `values`
  must be empty. In and NotIn need a non-empty `values`.
  Source: LABELS + "#set-based-requirement", and the LabelSelectorRequirement
  validation in the API reference.
  """
  key, operator = expression["key"], expression["operator"]
  values = expression.get("values") or []
  if operator in ("In", "NotIn"):
    if not values:
      raise PolicyError(f"{operator} on {key!r} needs values")
    if operator == "In":
      return key in labels and labels[key] in values
    return key not in labels or labels[key] not in values
  if operator in ("Exists", "DoesNotExist"):
    if values:
      raise PolicyError(f"{operator} on {key!r} takes no values")
    return (key in labels) == (operator == "Exists")
  raise PolicyError(f"unknown selector operator {operator!r}")


def selector_matches(selector: Optional[Mapping], labels: Mapping[str, str]) -> bool:
  """A LabelSelector: every `matchLabels` pair and every expression must hold.

  An empty selector (`{}`) matches everything. Label values are strings, so
  `matchLabels: {x: "true"}` does not match a YAML boolean.
  Source: LABELS + "#resources-that-support-set-based-requirements"
  ("matchLabels and matchExpressions are ANDed").
  """
  if selector is None:
    raise PolicyError("a missing selector is not an empty selector")
  for key, value in (selector.get("matchLabels") or {}).items():
    if not isinstance(value, str):
      raise PolicyError(f"label value for {key!r} must be a string, not {value!r}")
    if labels.get(key) != value:
      return False
  return all(expression_matches(e, labels) for e in selector.get("matchExpressions") or [])


def namespace_labels(name: str, labels: Optional[Mapping[str, str]] = None) -> dict:
  """A namespace's labels, with the immutable name label every namespace has.

  Source: DOCS + "#targeting-a-namespace-by-its-name" (kubernetes.io/metadata.name,
  set by the control plane since 1.22).
  """
  return {**(labels or {}), NAMESPACE_NAME_LABEL: name}


# --- Which policies apply to a pod ----------------------------------------


def policy_types(policy: Mapping) -> list:
  """The policy's `policyTypes`, or their default when it is absent.

  Default: Ingress always, and Egress if the policy has an `egress` section.
  Source: API, NetworkPolicySpec.policyTypes.
  """
  spec = policy["spec"]
  if "policyTypes" in spec:
    types = list(spec["policyTypes"])
    if not set(types) <= {"Ingress", "Egress"}:
      raise PolicyError(f"unknown policyTypes {types}")
    return types
  return ["Ingress"] + (["Egress"] if "egress" in spec else [])


def policy_namespace(policy: Mapping) -> str:
  """A policy without metadata.namespace lives in `default` (kubectl apply's default)."""
  return policy["metadata"].get("namespace", "default")


def selects(policy: Mapping, pod: Pod) -> bool:
  """A policy applies to the pods of its own namespace that its podSelector matches.

  Source: API, NetworkPolicySpec.podSelector ("An empty podSelector selects
  all pods in this namespace").
  """
  return policy_namespace(policy) == pod.namespace and selector_matches(
      policy["spec"].get("podSelector"), pod.labels)


def isolated(policies: Iterable[Mapping], pod: Pod, direction: str) -> bool:
  """A pod is isolated for a direction iff some policy selects it with that type.

  A pod that is not isolated allows every connection in that direction.
  Source: DOCS + "#the-two-sorts-of-pod-isolation".
  """
  return any(selects(p, pod) and direction in policy_types(p) for p in policies)


# --- Peers and ports -------------------------------------------------------


def ip_block_matches(block: Mapping, ip: str) -> bool:
  """`ipBlock`: inside `cidr` and outside every `except` range.

  Source: API, IPBlock.
  """
  address = ipaddress.ip_address(ip)
  if address not in ipaddress.ip_network(block["cidr"], strict=False):
    return False
  return not any(address in ipaddress.ip_network(e, strict=False) for e in block.get("except") or [])


def peer_matches(peer: Mapping, policy_ns: str, other: Pod, namespaces: Mapping[str, Mapping]) -> bool:
  """One `from`/`to` entry against the pod at the other end.

  podSelector alone: pods in the policy's namespace. namespaceSelector alone:
  every pod in the matching namespaces. Both in one entry: pods matching the
  podSelector in the matching namespaces (AND, not OR). ipBlock cannot be
  combined with either.
  Source: DOCS + "#behavior-of-to-and-from-selectors".
  """
  keys = set(peer) & {"podSelector", "namespaceSelector", "ipBlock"}
  if not keys or ("ipBlock" in keys and len(keys) > 1) or set(peer) - keys:
    raise PolicyError(f"invalid peer {dict(peer)}")
  if "ipBlock" in peer:
    return ip_block_matches(peer["ipBlock"], other.ip)
  if "namespaceSelector" in peer:
    ns_labels = namespace_labels(other.namespace, namespaces.get(other.namespace))
    if not selector_matches(peer["namespaceSelector"], ns_labels):
      return False
  elif other.namespace != policy_ns:
    return False
  return selector_matches(peer.get("podSelector", {}), other.labels)


def resolve_named_port(name: str, pod: Pod, protocol: str) -> Optional[int]:
  """A named port means the destination container port of that name and protocol.

  Source: API, NetworkPolicyPort.port ("a named port on a pod"), resolved
  against the selected pod's containers, so different pods may resolve the
  same name to different numbers. Container ports default to TCP.
  """
  for p in pod.ports:
    if p.get("name") == name and p.get("protocol", "TCP") == protocol:
      return int(p["containerPort"])
  return None


def port_matches(entry: Mapping, target: Pod, port: int, protocol: str) -> bool:
  """One `ports` entry against a connection to `target`:`port`/`protocol`.

  `protocol` defaults to TCP. No `port`: every port of that protocol. An
  integer `port` with `endPort`: the inclusive range; `endPort` needs a
  numeric `port` no larger than it. A string `port` is a named port.
  Sources: API, NetworkPolicyPort; DOCS + "#targeting-a-range-of-ports".
  """
  if entry.get("protocol", "TCP") != protocol:
    return False
  if "port" not in entry:
    if "endPort" in entry:
      raise PolicyError("endPort needs port")
    return True
  wanted = entry["port"]
  if isinstance(wanted, str):
    if "endPort" in entry:
      raise PolicyError("endPort needs a numeric port")
    return resolve_named_port(wanted, target, protocol) == port
  end = entry.get("endPort", wanted)
  if end < wanted:
    raise PolicyError(f"endPort {end} < port {wanted}")
  return wanted <= port <= end


def rule_allows(rule: Mapping, peers_key: str, policy_ns: str, other: Pod, target: Pod,
                port: int, protocol: str, namespaces: Mapping[str, Mapping]) -> bool:
  """One ingress or egress rule: some peer matches AND some port matches.

  An absent or empty `from`/`to` matches every peer, and an absent or empty
  `ports` every port. `target` is the pod that receives the connection (for
  named ports); `other` is the remote end.
  Source: API, NetworkPolicyIngressRule / NetworkPolicyEgressRule.
  """
  peers = rule.get(peers_key) or []
  if peers and not any(peer_matches(p, policy_ns, other, namespaces) for p in peers):
    return False
  ports = rule.get("ports") or []
  return not ports or any(port_matches(e, target, port, protocol) for e in ports)


def direction_allows(policies: Sequence[Mapping], pod: Pod, other: Pod, target: Pod, port: int,
                     protocol: str, direction: str, namespaces: Mapping[str, Mapping]) -> bool:
  """Policies are additive: allowed iff the pod is not isolated, or any rule allows.

  A selecting policy without rules for the direction (`ingress` absent or
  empty) allows nothing, which is how "deny all" is written.
  Source: DOCS + "#the-two-sorts-of-pod-isolation" and "#default-policies".
  """
  if not isolated(policies, pod, direction):
    return True
  rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
  for policy in policies:
    if not (selects(policy, pod) and direction in policy_types(policy)):
      continue
    for rule in policy["spec"].get(rules_key) or []:
      if rule_allows(rule, peers_key, policy_namespace(policy), other, target, port, protocol, namespaces):
        return True
  return False


def connection_allowed(policies: Sequence[Mapping], source: Pod, destination: Pod, port: int,
                       protocol: str = "TCP", namespaces: Optional[Mapping[str, Mapping]] = None) -> bool:
  """May `source` open a connection to `destination`:`port`?

  Both ends must allow it: the source's egress and the destination's ingress.
  A pod can always reach itself. Replies of an allowed connection are allowed
  implicitly, so they are not asked about.
  Source: DOCS, introduction ("a pod cannot block access to itself") and
  "#the-two-sorts-of-pod-isolation" ("both the egress policy on the source
  pod and the ingress policy on the destination pod need to allow").

  Args:
    policies: NetworkPolicy objects, as dicts.
    source: The connecting pod.
    destination: The listening pod.
    port: The destination port number.
    protocol: TCP, UDP or SCTP.
    namespaces: Labels of each namespace by name, for namespaceSelector.

  Returns:
    Whether a CNI plugin that implements NetworkPolicy lets it through.
  """
  if protocol not in ("TCP", "UDP", "SCTP"):
    raise PolicyError(f"unknown protocol {protocol!r}")
  for policy in policies:
    if policy.get("apiVersion") != "networking.k8s.io/v1" or policy.get("kind") != "NetworkPolicy":
      raise PolicyError(f"not a networking.k8s.io/v1 NetworkPolicy: {policy.get('kind')}")
  if source == destination:
    return True
  namespaces = namespaces or {}
  return (direction_allows(policies, source, destination, destination, port, protocol, "Egress", namespaces)
          and direction_allows(policies, destination, source, destination, port, protocol, "Ingress",
                               namespaces))
