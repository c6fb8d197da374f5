"""What Kueue is given on the test control plane: its configuration, its webhook configurations, its queues.

Pure: builds the JSON objects from Kueue's own manifests (read from the module source that
``ci/build_kueue.sh`` links beside the binary) and the ports and certificates of this run. The manifests
say ``clientConfig.service`` (a Service in ``kueue-system``), which a control plane without kube-proxy
cannot reach: each webhook is rewritten to ``clientConfig.url`` on 127.0.0.1 with the CA that signed
Kueue's serving certificate. Only the webhooks of what Kueue serves here are kept (its own API and plain
pods), and the pod webhooks only see the one namespace the tests manage, so that nothing else on the
control plane waits on Kueue.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["KUEUE_GROUP", "SERVED_GROUPS", "cluster_queue", "configuration", "local_queue", "resource_flavor",
           "webhook_configurations"]

KUEUE_GROUP = "kueue.x-k8s.io"
#: API groups whose webhooks Kueue serves with ``integrations.frameworks: [pod]``: its own and core (pods).
SERVED_GROUPS = frozenset({KUEUE_GROUP, ""})
_NAMESPACE_LABEL = "kubernetes.io/metadata.name"


def configuration(*, namespace: str, health_port: int, metrics_port: int, webhook_port: int,
                  cert_dir: str) -> dict[str, Any]:
    """Kueue's ``Configuration`` (JSON is YAML): plain pods of ``namespace`` only, no leader election, no
    internal certificate management (the webhook serves ``cert_dir``'s tls.crt and tls.key), every
    endpoint on 127.0.0.1, no visibility API server."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": "kueue-system",
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": f"127.0.0.1:{metrics_port}"},
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": cert_dir},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "manageJobsWithoutQueueName": False,
        "managedJobsNamespaceSelector": {"matchLabels": {_NAMESPACE_LABEL: namespace}},
        "integrations": {"frameworks": ["pod"]},
        # The visibility API server reads its certificate from the fixed path /visibility: not needed here.
        "featureGates": {"VisibilityOnDemand": False},
    }


def _served(webhook: Mapping[str, Any]) -> bool:
    return all(set(rule.get("apiGroups") or []) <= SERVED_GROUPS for rule in webhook.get("rules") or [])


def _is_pod_webhook(webhook: Mapping[str, Any]) -> bool:
    return any("pods" in (rule.get("resources") or []) for rule in webhook.get("rules") or [])


def webhook_configurations(manifests: Iterable[Mapping[str, Any]], *, base_url: str, ca_bundle: bytes,
                           namespace: str) -> list[dict[str, Any]]:
    """Kueue's Mutating/ValidatingWebhookConfigurations, each webhook called at ``base_url`` + its path and
    verified against ``ca_bundle`` (PEM); the pod webhooks limited to ``namespace``."""
    bundle = base64.b64encode(ca_bundle).decode()
    result = []
    for manifest in manifests:
        webhooks = []
        for webhook in manifest.get("webhooks") or []:
            if not _served(webhook):
                continue
            rewritten = dict(webhook)
            path = webhook["clientConfig"]["service"]["path"]
            rewritten["clientConfig"] = {"url": f"{base_url}{path}", "caBundle": bundle}
            if _is_pod_webhook(webhook):
                rewritten["namespaceSelector"] = {"matchLabels": {_NAMESPACE_LABEL: namespace}}
            webhooks.append(rewritten)
        result.append({"apiVersion": manifest["apiVersion"], "kind": manifest["kind"],
                       "metadata": {"name": manifest["metadata"]["name"]}, "webhooks": webhooks})
    return result


def resource_flavor(name: str) -> dict[str, Any]:
    """A ResourceFlavor with no node labels: every node is of it."""
    return {"apiVersion": f"{KUEUE_GROUP}/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": name}}


def cluster_queue(name: str, flavor: str, quota: Mapping[str, str]) -> dict[str, Any]:
    """A ClusterQueue of every namespace with ``quota`` (resource name -> nominal quota) of ``flavor``."""
    return {
        "apiVersion": f"{KUEUE_GROUP}/v1beta2", "kind": "ClusterQueue", "metadata": {"name": name},
        "spec": {
            "namespaceSelector": {},
            "resourceGroups": [{
                "coveredResources": list(quota),
                "flavors": [{"name": flavor, "resources": [{"name": resource, "nominalQuota": amount}
                                                           for resource, amount in quota.items()]}],
            }],
        },
    }


def local_queue(name: str, namespace: str, cluster_queue_name: str) -> dict[str, Any]:
    """The LocalQueue pods of ``namespace`` name in ``kueue.x-k8s.io/queue-name``."""
    return {"apiVersion": f"{KUEUE_GROUP}/v1beta2", "kind": "LocalQueue",
            "metadata": {"name": name, "namespace": namespace}, "spec": {"clusterQueue": cluster_queue_name}}
