"""The NetworkPolicy evaluator, rule by rule, then the connectivity of k8s/*.yaml.

The first part pins each rule of tests/standins/network_policy.py to the
behaviour the Kubernetes documentation describes. The second loads the real
manifests, builds the pods their templates create, and checks who may
connect to whom.
"""

import glob
import os

import pytest
import yaml

from conftest import REPO
from standins import network_policy as np_

K8S = os.path.join(REPO, "k8s")


def _policy(spec, name="p", namespace=None):
  metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
  return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": metadata, "spec": spec}


A = np_.Pod("a", {"app": "a"}, ip="10.0.0.1")
B = np_.Pod("b", {"app": "b"}, ip="10.0.0.2", ports=[{"name": "web", "containerPort": 8080}])
SELECT_B = {"matchLabels": {"app": "b"}}


# --- Label selectors -------------------------------------------------------


@pytest.mark.parametrize("expression, labels, expected", [
    ({"key": "x", "operator": "In", "values": ["1", "2"]}, {"x": "2"}, True),
    ({"key": "x", "operator": "In", "values": ["1"]}, {}, False),
    ({"key": "x", "operator": "NotIn", "values": ["1"]}, {}, True),  # absent counts as not in
    ({"key": "x", "operator": "NotIn", "values": ["1"]}, {"x": "1"}, False),
    ({"key": "x", "operator": "Exists"}, {"x": ""}, True),
    ({"key": "x", "operator": "DoesNotExist"}, {"x": "1"}, False),
])
def test_match_expressions_operators(expression, labels, expected):
  assert np_.expression_matches(expression, labels) is expected


@pytest.mark.parametrize("expression", [
    {"key": "x", "operator": "In", "values": []},
    {"key": "x", "operator": "Exists", "values": ["1"]},
    {"key": "x", "operator": "Equals", "values": ["1"]},
])
def test_invalid_match_expressions_are_rejected(expression):
  with pytest.raises(np_.PolicyError):
    np_.expression_matches(expression, {"x": "1"})


def test_selector_ands_labels_and_expressions_and_empty_matches_all():
  selector = {"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "Exists"}]}
  assert np_.selector_matches(selector, {"a": "1", "b": "x"})
  assert not np_.selector_matches(selector, {"a": "1"})
  assert np_.selector_matches({}, {"anything": "x"})
  with pytest.raises(np_.PolicyError):  # YAML `true` is not the label value "true"
    np_.selector_matches({"matchLabels": {"client": True}}, {"client": "true"})


def test_every_namespace_carries_its_name_label():
  assert np_.namespace_labels("prod", {"team": "ml"}) == {"team": "ml", "kubernetes.io/metadata.name": "prod"}


# --- Isolation and policy types --------------------------------------------


def test_policy_types_default_to_ingress_plus_egress_when_present():
  assert np_.policy_types(_policy({"podSelector": {}})) == ["Ingress"]
  assert np_.policy_types(_policy({"podSelector": {}, "egress": []})) == ["Ingress", "Egress"]
  assert np_.policy_types(_policy({"podSelector": {}, "policyTypes": ["Egress"]})) == ["Egress"]


def test_unselected_pods_are_not_isolated():
  policies = [_policy({"podSelector": SELECT_B, "policyTypes": ["Ingress"]})]
  assert np_.connection_allowed(policies, B, A, 80)  # A is not selected: open
  assert not np_.connection_allowed(policies, A, B, 80)  # B is selected with no rules: closed


def test_policies_apply_only_in_their_own_namespace():
  policies = [_policy({"podSelector": {}, "policyTypes": ["Ingress"]}, namespace="other")]
  assert np_.connection_allowed(policies, A, B, 80)


def test_absent_ingress_denies_and_empty_rule_allows_all():
  deny = [_policy({"podSelector": SELECT_B, "policyTypes": ["Ingress"]})]
  allow_all = [_policy({"podSelector": SELECT_B, "policyTypes": ["Ingress"], "ingress": [{}]})]
  assert not np_.connection_allowed(deny, A, B, 80)
  assert np_.connection_allowed(allow_all, A, B, 80)


def test_policies_are_additive():
  deny = _policy({"podSelector": SELECT_B, "policyTypes": ["Ingress"]}, name="deny")
  allow = _policy({"podSelector": SELECT_B, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}]}]},
                  name="allow")
  assert np_.connection_allowed([deny, allow], A, B, 80)


def test_egress_of_the_source_must_allow_too():
  policies = [_policy({"podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Egress"]})]
  assert not np_.connection_allowed(policies, A, B, 80)


def test_a_pod_can_always_reach_itself():
  policies = [_policy({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})]
  assert np_.connection_allowed(policies, B, B, 8080)


# --- Peers -----------------------------------------------------------------


def _only_from(peer, ports=None):
  rule = {"from": [peer], **({"ports": ports} if ports else {})}
  return [_policy({"podSelector": SELECT_B, "ingress": [rule]})]


def test_pod_selector_peer_is_limited_to_the_policy_namespace():
  policies = _only_from({"podSelector": {"matchLabels": {"app": "a"}}})
  assert np_.connection_allowed(policies, A, B, 80)
  elsewhere = np_.Pod("a2", {"app": "a"}, namespace="other")
  assert not np_.connection_allowed(policies, elsewhere, B, 80)


def test_namespace_selector_peer_matches_every_pod_there():
  policies = _only_from({"namespaceSelector": {"matchLabels": {"team": "ml"}}})
  ml = np_.Pod("x", namespace="ml")
  assert np_.connection_allowed(policies, ml, B, 80, namespaces={"ml": {"team": "ml"}})
  assert not np_.connection_allowed(policies, ml, B, 80, namespaces={"ml": {}})


def test_namespace_and_pod_selector_in_one_peer_are_anded():
  policies = _only_from({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}},
                         "podSelector": {"matchLabels": {"app": "prometheus"}}})
  assert np_.connection_allowed(policies, np_.Pod("p", {"app": "prometheus"}, namespace="mon"), B, 80)
  assert not np_.connection_allowed(policies, np_.Pod("q", {"app": "other"}, namespace="mon"), B, 80)
  assert not np_.connection_allowed(policies, np_.Pod("p", {"app": "prometheus"}), B, 80)


def test_ip_block_with_except_and_no_mixing():
  policies = _only_from({"ipBlock": {"cidr": "10.0.0.0/24", "except": ["10.0.0.1/32"]}})
  assert not np_.connection_allowed(policies, A, B, 80)  # 10.0.0.1 is excepted
  assert np_.connection_allowed(policies, np_.Pod("c", ip="10.0.0.9"), B, 80)
  with pytest.raises(np_.PolicyError):
    np_.connection_allowed(_only_from({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}), A, B, 80)


# --- Ports -----------------------------------------------------------------


def test_numbered_port_protocol_defaults_to_tcp():
  policies = _only_from({"podSelector": {}}, ports=[{"port": 53}])
  assert np_.connection_allowed(policies, A, B, 53)
  assert not np_.connection_allowed(policies, A, B, 53, protocol="UDP")
  assert not np_.connection_allowed(policies, A, B, 54)


def test_port_entry_without_port_matches_every_port_of_its_protocol():
  policies = _only_from({"podSelector": {}}, ports=[{"protocol": "TCP"}])
  assert np_.connection_allowed(policies, A, B, 45123)
  assert not np_.connection_allowed(policies, A, B, 45123, protocol="UDP")


def test_named_port_resolves_against_the_destination_container():
  policies = _only_from({"podSelector": {}}, ports=[{"port": "web"}])
  assert np_.connection_allowed(policies, A, B, 8080)
  assert not np_.connection_allowed(policies, A, B, 80)
  assert not np_.connection_allowed(policies, A, np_.Pod("b2", {"app": "b"}), 8080)  # no such port there


def test_end_port_is_an_inclusive_range_and_needs_a_number():
  policies = _only_from({"podSelector": {}}, ports=[{"port": 32000, "endPort": 32768}])
  assert np_.connection_allowed(policies, A, B, 32768)
  assert not np_.connection_allowed(policies, A, B, 32769)
  with pytest.raises(np_.PolicyError):
    np_.connection_allowed(_only_from({"podSelector": {}}, ports=[{"port": "web", "endPort": 9000}]), A, B, 8080)


# --- The manifests ---------------------------------------------------------


def _manifests():
  docs = []
  for path in sorted(glob.glob(os.path.join(K8S, "*.yaml"))):
    with open(path, encoding="utf-8") as f:
      docs += [d for d in yaml.safe_load_all(f) if d]
  return docs


def _pod_template(doc):
  if doc["kind"] == "TFJob":
    return doc["spec"]["tfReplicaSpecs"]["Worker"]["template"]
  return doc["spec"]["template"]


def _pod(doc, index, ip):
  template = _pod_template(doc)
  ports = [p for c in template["spec"]["containers"] for p in c.get("ports", [])]
  return np_.Pod(f"{doc['metadata']['name']}-{index}", dict(template["metadata"]["labels"]), ip=ip, ports=ports,
                 namespace=doc["metadata"]["namespace"])


def _namespace(docs):
  """The one namespace every object of k8s/*.yaml names (k8s/namespace.yaml's)."""
  (namespace,) = [d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"]
  objects = [d for d in docs if d["kind"] not in ("Namespace", "Kustomization")]
  assert {d["metadata"].get("namespace") for d in objects} == {namespace}
  return namespace


@pytest.fixture(scope="module")
def cluster():
  docs = _manifests()
  namespace = _namespace(docs)
  workloads = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Job", "Deployment", "TFJob")}
  pods = {
      "worker0": _pod(workloads["cnn-trainer"], 0, "10.1.0.10"),
      "worker1": _pod(workloads["cnn-trainer"], 1, "10.1.0.11"),
      "tfjob0": _pod(workloads["cnn-trainer-tfjob"], 0, "10.1.0.20"),
      "tfjob1": _pod(workloads["cnn-trainer-tfjob"], 1, "10.1.0.21"),
      "serving": _pod(workloads["tf-serving"], 0, "10.1.0.30"),
      "tensorboard": _pod(workloads["cnn-trainer-tensorboard"], 0, "10.1.0.40"),
      "client": np_.Pod("client", {"cnn-trainer/tf-serving-client": "true"}, ip="10.1.0.50",
                        namespace=namespace),
      "unlabelled": np_.Pod("unlabelled", {}, ip="10.1.0.60", namespace=namespace),
      # Another team's pods: the policies' podSelectors never match them.
      "other-client": np_.Pod("other-client", {"cnn-trainer/tf-serving-client": "true"}, ip="10.1.0.70",
                              namespace="default"),
  }
  policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
  return pods, policies


def _allowed(cluster, source, destination, port):
  pods, policies = cluster
  return np_.connection_allowed(policies, pods[source], pods[destination], port)


NCCL_PORT = 43817  # any ephemeral port: NCCL picks its listening ports at run time


@pytest.mark.parametrize("source, destination, port, expected", [
    ("worker0", "worker1", 2222, True),
    ("worker1", "worker0", NCCL_PORT, True),
    ("tfjob0", "tfjob1", 2222, True),
    ("tfjob1", "tfjob0", NCCL_PORT, True),
    ("unlabelled", "worker0", 2222, False),
    ("serving", "worker0", 2222, False),
    ("client", "worker1", NCCL_PORT, False),
    ("worker0", "tfjob0", 2222, False),  # the two trainers are separate jobs
    ("client", "serving", 8500, True),
    ("client", "serving", 8501, True),
    ("client", "serving", 2222, False),
    ("unlabelled", "serving", 8500, False),
    ("unlabelled", "serving", 8501, False),
    ("other-client", "serving", 8500, False),  # the label counts only in cnn-trainer's namespace
    ("serving", "serving", 8502, True),        # TF Serving's own REST port: its pod only (the proxy)
    ("client", "serving", 8502, False),
    ("worker0", "serving", 8501, False),
    ("client", "tensorboard", 6006, False),
    ("unlabelled", "tensorboard", 6006, False),
    ("serving", "tensorboard", 6006, False),
    ("worker0", "tensorboard", 6006, False),
    # Egress is open: workers reach a pod no policy selects.
    ("worker0", "unlabelled", 443, True),
])
def test_connectivity_matrix(cluster, source, destination, port, expected):
  assert _allowed(cluster, source, destination, port) is expected


def test_every_workload_is_isolated_for_ingress_and_none_for_egress(cluster):
  pods, policies = cluster
  for name in ("worker0", "tfjob0", "serving", "tensorboard"):
    assert np_.isolated(policies, pods[name], "Ingress"), name
    # GCS has no fixed addresses; DNS and the metadata server must stay reachable.
    assert not np_.isolated(policies, pods[name], "Egress"), name


def test_serving_policy_opens_exactly_the_proxys_ports(cluster):
  """Clients reach the proxy's gRPC and REST ports; TF Serving's own REST port stays closed."""
  pods, policies = cluster
  (serving,) = [d for d in _manifests() if d["kind"] == "Deployment" and d["metadata"]["name"] == "tf-serving"]
  containers = {c["name"]: c for c in serving["spec"]["template"]["spec"]["containers"]}
  proxy_ports = {p["containerPort"] for p in containers["proxy"]["ports"]}
  assert proxy_ports == {8500, 8501}
  opened = {port for port in range(8490, 8520)
            if np_.connection_allowed(policies, pods["client"], pods["serving"], port)}
  assert opened == proxy_ports
