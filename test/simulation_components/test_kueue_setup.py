"""What the test harness gives Kueue: its own webhook configurations, rewritten to reach it on 127.0.0.1.

Why this exists: a webhook left on its Service (no kube-proxy on the test control plane) or a pod webhook
left on every namespace would make pod creation fail or wait on Kueue for every test; the rewrite is
checked here on Kueue's own manifests, as the harness reads them from the module source.
"""

from __future__ import annotations

import base64

import pytest
import yaml  # type: ignore[import-untyped]  # no types-PyYAML among the dev pins

from simulation_components.kueue import KueueBuildError, kueue_build
from simulation_components.kueue.setup import SERVED_GROUPS, webhook_configurations


def _manifests() -> list[dict[str, object]]:
    try:
        source = kueue_build() / "source"
    except KueueBuildError as error:
        pytest.fail(f"Kueue is not built: {error}")
    text = (source / "config" / "components" / "webhook" / "manifests.yaml").read_text(encoding="utf-8")
    return [document for document in yaml.safe_load_all(text) if document]


def test_each_webhook_kueue_serves_is_called_on_127_0_0_1_with_the_ca_and_pods_only_of_the_namespace() -> None:
    manifests = _manifests()
    rewritten = webhook_configurations(manifests, base_url="https://127.0.0.1:9443", ca_bundle=b"PEM",
                                       namespace="dots")
    assert [c["kind"] for c in rewritten] == ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]
    webhooks = [webhook for configuration in rewritten for webhook in configuration["webhooks"]]
    names = {webhook["name"] for webhook in webhooks}
    assert {"mpod.kb.io", "vpod.kb.io", "mclusterqueue.kb.io", "vworkload.kb.io"} <= names
    assert not names & {"mdeployment.kb.io", "mjaxjob.kb.io"}, "webhooks of integrations that are off"
    for webhook in webhooks:
        assert webhook["clientConfig"]["url"].startswith("https://127.0.0.1:9443/")
        assert base64.b64decode(webhook["clientConfig"]["caBundle"]) == b"PEM"
        assert all(set(rule["apiGroups"]) <= SERVED_GROUPS for rule in webhook["rules"])
        if any("pods" in rule["resources"] for rule in webhook["rules"]):
            assert webhook["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "dots"}}
