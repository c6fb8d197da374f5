"""The Kubernetes manifests, checked offline: valid objects, least privilege, a hardened daemon.

A manifest error is otherwise found only when someone applies it to a
cluster. Every object in ``k8s_cluster_configuration/`` is validated against
the Kubernetes OpenAPI schemas (the strict ones, which reject unknown
fields) that ``kubernetes-validate`` ships, so no cluster and no network are
needed.

The Role must grant exactly what the daemon calls: the expected grants are a
table here naming the gateway methods, and that table is cross-checked
against the HTTP methods and paths ``model_services_orchestrator/k8s_api.py``
actually uses, so a new call in the code that the Role does not grant fails
this test instead of failing in production with a 403.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # no types-PyYAML among the dev pins
from kubernetes_validate import utils as kubernetes_validate  # type: ignore[import-untyped]  # ships no py.typed

from model_services_orchestrator.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "k8s_cluster_configuration"
PACKAGE = ROOT / "model_services_orchestrator"
K8S_API = PACKAGE / "k8s_api.py"
LEADER_ELECTION = PACKAGE / "leader_election.py"
LEASE_NAME = Settings().leader_lease_name  # the default SIMULATOR_NAME's, as the manifests deploy it
BROKER_CONFIG = ROOT / "simulation_components" / "mosquitto" / "mosquitto.conf"

# The oldest Kubernetes minor version the manifests are written for.
KUBERNETES_VERSION = "1.33.0"
NAMESPACE = "dots"
NOT_OBJECTS = {"kustomization.yaml", "kind-cluster-config.yaml"}

# What the daemon does, as (resource, verb), and where. The single source of
# the Role's rules; test_grants_match_the_calls_in_the_code checks it against the code.
EXPECTED_GRANTS: dict[tuple[str, str], str] = {
    ("pods", "create"): "KubernetesGateway.create_pod: POST /api/v1/namespaces/{ns}/pods",
    ("pods", "get"): "KubernetesGateway.read_pod: GET /api/v1/namespaces/{ns}/pods/{name}",
    ("pods", "patch"): "KubernetesGateway.stop_pod: PATCH /api/v1/namespaces/{ns}/pods/{name}",
    ("pods", "delete"): "KubernetesGateway.delete_own_pod: DELETE /api/v1/namespaces/{ns}/pods/{name}",
    ("pods", "deletecollection"): "KubernetesGateway.delete_pods: DELETE /api/v1/namespaces/{ns}/pods?labelSelector=",
    ("pods", "list"): "PodWatcher._list: CoreV1Api.list_namespaced_pod",
    ("pods", "watch"): "PodWatcher._watch_once: CoreV1Api.list_namespaced_pod(watch=True)",
    ("pods/log", "get"): "KubernetesGateway.read_log_tail: CoreV1Api.read_namespaced_pod_log",
    ("configmaps", "create"): "KubernetesGateway.put_object('configmaps'): POST (the simulation record)",
    ("configmaps", "update"): "KubernetesGateway.replace_object('configmaps') and put_object: PUT",
    ("configmaps", "list"): "KubernetesGateway.list_objects('configmaps'): GET with labelSelector",
    ("configmaps", "delete"): "KubernetesGateway.delete_object('configmaps')",
    ("secrets", "create"): "KubernetesGateway.put_object('secrets'): POST (the models' specs)",
    ("secrets", "update"): "KubernetesGateway.put_object('secrets'): PUT after 409",
    ("secrets", "list"): "KubernetesGateway.list_objects('secrets'): GET with labelSelector",
    ("secrets", "delete"): "KubernetesGateway.delete_object('secrets')",
    ("leases", "get"): "LeaderElector._read: GET .../leases/{name} (coordination.k8s.io)",
    ("leases", "create"): "LeaderElector._write: POST .../leases, the first time",
    ("leases", "update"): "LeaderElector._write: PUT .../leases/{name} at the resourceVersion read",
    ("modelservices", "list"): "KubernetesGateway.watch_model_services and probe_model_services (dots.mso.io)",
    ("modelservices", "watch"): "PodWatcher of ModelServices: watch_model_services(watch=True)",
    ("workloads", "get"): "KubernetesGateway.delete_kueue_workload: GET .../workloads/{name} (kueue.x-k8s.io)",
    ("workloads", "delete"): "KubernetesGateway.delete_kueue_workload: DELETE .../workloads/{name} (uid precondition)",
}

# Typed client calls the gateway may make, as the grants they need.
CLIENT_CALLS: dict[str, set[tuple[str, str]]] = {
    "list_namespaced_pod": {("pods", "list")},
    "read_namespaced_pod_log": {("pods/log", "get")},
    "list_namespaced_custom_object": {("modelservices", "list")},
}
# The client calls of the methods the watchers call with watch=True (PodWatcher's list_call).
WATCHED_BY = ("watch_pods", "watch_model_services")


# ---------------------------------------------------------------- loading


def _documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text(encoding="utf-8")) if document]


def _object_files() -> list[Path]:
    return sorted(path for path in MANIFESTS.glob("*.yaml") if path.name not in NOT_OBJECTS)


def _objects() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in _object_files():
        for document in _documents(path):
            yield f"{path.name}:{document['kind']}/{document['metadata']['name']}", document


ALL_OBJECTS = dict(_objects())


def _one(kind: str, name: str) -> dict[str, Any]:
    found = [document for document in ALL_OBJECTS.values()
             if document["kind"] == kind and document["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


# ---------------------------------------------------------------- every object


@pytest.mark.parametrize("name", sorted(ALL_OBJECTS))
def test_object_matches_the_kubernetes_schema(name: str) -> None:
    try:
        kubernetes_validate.validate(ALL_OBJECTS[name], KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(part) for part in exc.path)
        pytest.fail(f"{name}: {path}: {exc.message}")


def test_the_validator_rejects_an_unknown_field() -> None:
    # Guards the test above: strict mode really does reject what a typo makes.
    service = dict(_one("Service", "mosquitto"))
    service["spec"] = {**service["spec"], "selectr": {"app": "x"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, KUBERNETES_VERSION, strict=True)


def test_everything_is_in_the_namespace() -> None:
    for name, document in ALL_OBJECTS.items():
        if document["kind"] == "Namespace":
            assert document["metadata"]["name"] == NAMESPACE
        elif document["kind"] == "CustomResourceDefinition":
            # The model registry's type is cluster-wide, as every CRD is; its objects are namespaced.
            assert document["metadata"]["name"] == "modelservices.dots.mso.io"
            assert document["spec"]["scope"] == "Namespaced"
        else:
            assert document["metadata"].get("namespace") == NAMESPACE, f"{name}: not in namespace {NAMESPACE}"


def test_kustomization_lists_the_objects_and_leaves_the_examples_out() -> None:
    kustomization = _documents(MANIFESTS / "kustomization.yaml")[0]
    resources = set(kustomization["resources"])
    files = {path.name for path in _object_files()}
    examples = {name for name in files if name.endswith(".example.yaml")}
    assert examples, "the Secret examples are missing"
    assert resources == files - examples
    for name in examples:
        assert all(document["kind"] == "Secret" for document in _documents(MANIFESTS / name))


def test_kind_cluster_has_a_worker_for_the_model_pods() -> None:
    cluster = _documents(MANIFESTS / "kind-cluster-config.yaml")[0]
    workers = [node for node in cluster["nodes"] if node["role"] == "worker"]
    assert any(node.get("labels", {}).get("type") == "worker" for node in workers)


# ---------------------------------------------------------------- RBAC


def _role_grants(role: dict[str, Any]) -> set[tuple[str, str]]:
    grants: set[tuple[str, str]] = set()
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule
        if rule.get("apiGroups") == ["dots.mso.io"]:
            assert rule["resources"] == ["modelservices"], "from that group, only the model registry"
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, "ModelServices are only read"
        elif rule.get("apiGroups") == ["coordination.k8s.io"]:
            assert rule["resources"] == ["leases"], "from that group, only the leader Lease"
            # create cannot be narrowed by name; every other verb is, to the one Lease.
            assert rule.get("resourceNames", [LEASE_NAME]) == [LEASE_NAME] or rule["verbs"] == ["create"], rule
            assert "resourceNames" in rule or rule["verbs"] == ["create"], rule
        elif rule.get("apiGroups") == ["kueue.x-k8s.io"]:
            assert rule["resources"] == ["workloads"], "from Kueue's group, only the Workloads of its pod groups"
        else:
            assert rule.get("apiGroups") == [""], "the daemon uses only the core API group, leases, and Workloads"
            assert "resourceNames" not in rule
        for resource in rule["resources"]:
            for verb in rule["verbs"]:
                assert "*" not in resource and "*" not in verb, f"wildcard in {rule}"
                grants.add((resource, verb))
    return grants


def test_role_is_namespaced_and_grants_exactly_what_the_daemon_does() -> None:
    kinds = {document["kind"] for document in ALL_OBJECTS.values()}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}, "nothing cluster-wide"
    role = _one("Role", "model-services-orchestrator")
    assert role["metadata"]["namespace"] == NAMESPACE
    grants = _role_grants(role)
    assert grants == set(EXPECTED_GRANTS), (
        f"missing: {sorted(set(EXPECTED_GRANTS) - grants)}; not needed: {sorted(grants - set(EXPECTED_GRANTS))}")


def test_role_binding_gives_the_role_to_the_daemon() -> None:
    binding = _one("RoleBinding", "model-services-orchestrator")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "model-services-orchestrator"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "model-services-orchestrator",
                                    "namespace": NAMESPACE}]
    _one("ServiceAccount", "model-services-orchestrator")


def _functions(source: str) -> dict[str, str]:
    """Each function or method of the module, by name, as its source text."""
    tree = ast.parse(source)
    functions: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            segment = ast.get_source_segment(source, node)
            assert segment is not None
            functions[node.name] = segment
    return functions


def _kinds_passed_to(method: str) -> set[str]:
    """The resource names the package passes as the first argument of ``gateway.<method>(...)``; through the
    gateway's own helpers that pass their ``kind`` on."""
    kinds: set[str] = set()
    gateway_functions = _functions(K8S_API.read_text(encoding="utf-8"))
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(rf"\.{method}\(\s*(?P<argument>[^,)]*)", text):
            argument = match["argument"].strip()
            if argument == "kind" and path == K8S_API:
                callers = [name for name, body in gateway_functions.items()
                           if name != method and match[0] in body]
                assert callers, f"{method}(kind, ...): called from where?"
                for caller in callers:
                    kinds |= _kinds_passed_to(caller)
                continue
            assert re.fullmatch(r"\"[a-z]+\"", argument), (
                f"{path.name}: {method}({argument}, ...): not a literal resource name, cannot check the Role")
            kinds.add(argument.strip('"'))
    return kinds


def _resolve_path(expression: str, body: str) -> str:
    """The f-string template a ``_raw`` path argument stands for, resolving local names."""
    expression = expression.strip()
    if re.fullmatch(r"\w+", expression):
        assignment = re.search(rf"^\s*{expression} = (f\"[^\"]*\")", body, re.MULTILINE)
        assert assignment, f"cannot find what {expression} is"
        expression = assignment[1]
    assert expression.startswith('f"'), f"unexpected path expression {expression}"
    template = expression[2:-1]
    # A path built from another local name (f"{collection}/{name}").
    head = re.match(r"\{(\w+)\}", template)
    if head and head[1] not in {"self.namespace"}:
        return _resolve_path(head[1], body) + template[head.end():]
    return template


_GROUP = r"^/(?:api/v1|apis/kueue\.x-k8s\.io/v1beta2)/namespaces/\{self\.namespace\}/"
_COLLECTION = re.compile(_GROUP + r"(?P<resource>\{kind\}|[a-z]+)$")
_ITEM = re.compile(_GROUP + r"(?P<resource>\{kind\}|[a-z]+)/\{name\}$")
_VERBS = {("GET", False): "list", ("POST", False): "create", ("DELETE", False): "deletecollection",
          ("GET", True): "get", ("PUT", True): "update", ("DELETE", True): "delete", ("PATCH", True): "patch"}


def _grants_used_by_the_code() -> set[tuple[str, str]]:
    source = K8S_API.read_text(encoding="utf-8")
    used: set[tuple[str, str]] = set()
    for function, body in _functions(source).items():
        if function == "_raw":
            continue
        for call in re.finditer(r"_raw\(\s*\"(?P<method>[A-Z]+)\",\s*(?P<path>f\"[^\"]*\"|\w+)", body):
            template = _resolve_path(call["path"], body)
            collection, item = _COLLECTION.match(template), _ITEM.match(template)
            match = collection or item
            assert match, f"{function}: {call['method']} {template}: a path this test does not know"
            verb = _VERBS[(call["method"], item is not None)]
            resource = match["resource"]
            resources = _kinds_passed_to(function) if resource == "{kind}" else {resource}
            assert resources, f"{function} takes the resource as an argument, but nobody calls it"
            used |= {(name, verb) for name in resources}
        for call in re.finditer(r"\.(core|custom)\.(?P<method>\w+)\(", body):
            assert call["method"] in CLIENT_CALLS, f"{function}: {call['method']}: add it to CLIENT_CALLS"
            used |= CLIENT_CALLS[call["method"]]
            if call["method"].startswith("list_") and ("watch=True" in body or function in WATCHED_BY):
                used |= {(resource, "watch") for resource, _ in CLIENT_CALLS[call["method"]]}
    lease_calls = re.findall(r"_request\(\"(?P<method>[A-Z]+)\", (?P<path>[^,)]+)",
                             LEADER_ELECTION.read_text(encoding="utf-8"))
    assert lease_calls, "the leader election's requests are no longer found: update this test"
    for method, path in lease_calls:
        assert "_collection" in path, f"leader election: {method} {path}: a path this test does not know"
        used.add(("leases", _VERBS[(method, "self.name" in path)]))
    return used


def test_grants_match_the_calls_in_the_code() -> None:
    used = _grants_used_by_the_code()
    assert used == set(EXPECTED_GRANTS), (
        f"the code calls, but EXPECTED_GRANTS (and so the Role) lacks: {sorted(used - set(EXPECTED_GRANTS))}; "
        f"EXPECTED_GRANTS has, but the code no longer calls: {sorted(set(EXPECTED_GRANTS) - used)}")


def test_only_the_gateway_talks_to_kubernetes() -> None:
    # Otherwise the scan above would miss calls made elsewhere.
    for path in PACKAGE.rglob("*.py"):
        if path in (K8S_API, LEADER_ELECTION):  # the Lease's calls are checked apart
            continue
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(import|from) kubernetes\b", text, re.MULTILINE), (
            f"{path.relative_to(ROOT)} imports the kubernetes client: check its calls against the Role")
        assert "._raw(" not in text and ".core." not in text and ".custom." not in text, (
            f"{path.relative_to(ROOT)} calls the API directly")


# ---------------------------------------------------------------- the daemon


def test_daemon_deployment() -> None:
    deployment = _one("Deployment", "model-services-orchestrator")
    spec = deployment["spec"]
    # Two replicas, one leader: a rollout surges one new replica and keeps the old until the new is Ready.
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = spec["template"]["spec"]
    [spread] = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    budget = _one("PodDisruptionBudget", "model-services-orchestrator")
    assert budget["spec"] == {"minAvailable": 1, "selector": spec["selector"]}
    assert pod["serviceAccountName"] == "model-services-orchestrator"
    assert pod.get("automountServiceAccountToken", True) is True
    assert pod["enableServiceLinks"] is False
    container = _container(deployment)
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]
    assert container["image"] != "" and not container["image"].endswith(":latest")
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        http_get = container[probe]["httpGet"]
        assert http_get["path"] == path
        assert ports.get(http_get["port"], http_get["port"]) == 8080
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]


def test_daemon_is_configured_by_config_map_and_secret_without_a_token() -> None:
    deployment = _one("Deployment", "model-services-orchestrator")
    container = _container(deployment)
    sources = container["envFrom"]
    assert {"configMapRef": {"name": "model-services-orchestrator-config"}} in sources
    assert {"secretRef": {"name": "model-services-orchestrator-secrets"}} in sources
    names = {item["name"] for item in container.get("env", [])}
    config = _one("ConfigMap", "model-services-orchestrator-config")["data"]
    secret = _one("Secret", "model-services-orchestrator-secrets")
    secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    # In-cluster, the service account: a token in the pod would override it.
    for where in (names, set(config), secret_keys):
        assert "KUBERNETES_API_TOKEN" not in where
    settings = {name.upper() for name in Settings.model_fields}
    assert set(config) <= settings, f"not settings: {sorted(set(config) - settings)}"
    assert secret_keys == {"MQTT_PASSWORD"}
    assert "MQTT_PASSWORD" not in config
    assert int(config["HTTP_PORT"]) == 8080
    service = _one("Service", "mosquitto")
    assert config["MQTT_HOST"] == service["metadata"]["name"]
    assert int(config["MQTT_PORT"]) == service["spec"]["ports"][0]["port"]
    assert config["KUBERNETES_NAMESPACE"] == NAMESPACE


def _assert_hardened(security: dict[str, Any], *, user: int) -> None:
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == user
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "add" not in security["capabilities"]
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security.get("privileged", False) is False


def test_daemon_container_is_hardened() -> None:
    deployment = _one("Deployment", "model-services-orchestrator")
    _assert_hardened(_container(deployment)["securityContext"], user=10001)


def test_model_pods_get_no_token_from_the_default_account() -> None:
    assert _one("ServiceAccount", "default")["automountServiceAccountToken"] is False


# ---------------------------------------------------------------- the broker


def _directives(config: str) -> dict[str, str]:
    directives: dict[str, str] = {}
    for raw in config.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            directives[key] = value.strip()
    return directives


def test_broker_config_is_the_tested_one() -> None:
    config = _one("ConfigMap", "mosquitto-config")["data"]["mosquitto.conf"]
    assert config == BROKER_CONFIG.read_text(encoding="utf-8"), (
        "the ConfigMap's mosquitto.conf differs from simulation_components/mosquitto/mosquitto.conf")
    directives = _directives(config)
    assert directives["queue_qos0_messages"] == "true"
    assert directives["allow_anonymous"] == "false"
    assert directives["persistence"] == "true"
    assert int(directives["max_inflight_messages"]) >= 20, "the daemon's default MQTT_MAX_INFLIGHT_MESSAGES"


def test_broker_deployment() -> None:
    deployment = _one("Deployment", "mosquitto")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    assert re.fullmatch(r"eclipse-mosquitto:2\.0\.\d+", container["image"])
    compose = yaml.safe_load((ROOT / "docker-compose.local.yml").read_text(encoding="utf-8"))
    assert compose["services"]["mosquitto"]["image"] == container["image"], "one broker version everywhere"
    _assert_hardened(container["securityContext"], user=1883)
    assert pod["securityContext"]["fsGroup"] == 1883

    directives = _directives(_one("ConfigMap", "mosquitto-config")["data"]["mosquitto.conf"])
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    config_dir = Path(mounts["config"])
    assert Path(container["command"][-1]) == config_dir / "mosquitto.conf"
    projected = {item["path"]: source for source in volumes["config"]["projected"]["sources"]
                 for kind in ("configMap", "secret") if kind in source for item in source[kind]["items"]}
    assert projected["mosquitto.conf"]["configMap"]["name"] == "mosquitto-config"
    assert Path(directives["password_file"]) == config_dir / "passwd"
    assert projected["passwd"]["secret"]["name"] == _one("Secret", "mosquitto-passwd")["metadata"]["name"]
    assert Path(directives["persistence_location"]) == Path(mounts["data"])
    assert "emptyDir" in volumes["data"] or "persistentVolumeClaim" in volumes["data"]


def test_broker_service_selects_the_broker() -> None:
    service = _one("Service", "mosquitto")
    labels = _one("Deployment", "mosquitto")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["port"] == int(_directives(
        _one("ConfigMap", "mosquitto-config")["data"]["mosquitto.conf"])["listener"])


# ---------------------------------------------------------------- the network policy


def _peers_and_ports(rule: dict[str, Any]) -> tuple[list[dict[str, Any]], set[tuple[str, int]]]:
    ports = {(port.get("protocol", "TCP"), port["port"]) for port in rule.get("ports", [])}
    assert all(isinstance(port, int) for _, port in ports), f"numbered ports, so that they can be checked: {rule}"
    return rule.get("to", rule.get("from", [])), ports


def test_network_policy_selects_the_daemon_and_restricts_both_ways() -> None:
    policy = _one("NetworkPolicy", "model-services-orchestrator")["spec"]
    deployment = _one("Deployment", "model-services-orchestrator")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = policy["podSelector"]
    assert set(selector) == {"matchLabels"} and selector["matchLabels"], "select the daemon's pods by label"
    assert selector["matchLabels"].items() <= pod_labels.items(), "the policy does not select the daemon's pods"
    # The Deployment's own selector: no other pod may carry it (its ReplicaSet would adopt it), so no model pod.
    assert selector["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]


def test_network_policy_lets_in_only_the_http_port() -> None:
    policy = _one("NetworkPolicy", "model-services-orchestrator")["spec"]
    container = _container(_one("Deployment", "model-services-orchestrator"))
    [http_port] = [port for port in container["ports"] if port["name"] == "http"]
    config = _one("ConfigMap", "model-services-orchestrator-config")["data"]
    [rule] = policy["ingress"]
    _, ports = _peers_and_ports(rule)
    assert ports == {(http_port.get("protocol", "TCP"), http_port["containerPort"])}
    assert http_port["containerPort"] == int(config["HTTP_PORT"])


def test_network_policy_lets_out_the_api_server_the_broker_and_dns() -> None:
    policy = _one("NetworkPolicy", "model-services-orchestrator")["spec"]
    rules = [_peers_and_ports(rule) for rule in policy["egress"]]
    by_ports = {frozenset(ports): peers for peers, ports in rules}
    assert len(by_ports) == len(rules) == 3, "three rules: the API server, the broker, DNS"

    # The API server: its address is the cluster's own, so any destination, on its two usual ports only.
    api = by_ports[frozenset({("TCP", 443), ("TCP", 6443)})]
    assert api == []

    # The broker: the mosquitto pods, on the port the broker listens on and the Service targets.
    broker = _one("Deployment", "mosquitto")
    broker_port = _container(broker)["ports"][0]
    service = _one("Service", "mosquitto")
    listener = int(_directives(_one("ConfigMap", "mosquitto-config")["data"]["mosquitto.conf"])["listener"])
    assert broker_port["containerPort"] == listener
    assert service["spec"]["ports"][0]["targetPort"] == broker_port["name"]
    [peers] = [peers for peers, ports in rules if ports == {("TCP", broker_port["containerPort"])}]
    [peer] = peers
    assert set(peer) == {"podSelector"}, "the broker runs in this namespace"
    broker_labels = broker["spec"]["template"]["metadata"]["labels"]
    assert peer["podSelector"]["matchLabels"].items() <= broker_labels.items()
    assert peer["podSelector"]["matchLabels"] == service["spec"]["selector"]
    daemon_labels = _one("Deployment", "model-services-orchestrator")["spec"]["template"]["metadata"]["labels"]
    assert not peer["podSelector"]["matchLabels"].items() <= daemon_labels.items()

    # DNS: both protocols, to kube-system only.
    dns = by_ports[frozenset({("UDP", 53), ("TCP", 53)})]
    assert dns == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}]
