"""The daemon's configuration, read from the environment (and a ``.env`` file).

The names are the upstream orchestrator's (PROTOCOL.md section 6), so a
deployment can switch to this daemon without touching its configuration.
Everything here is validated at start-up, so that an unusable configuration
fails with one clear line instead of a crash later.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from model_services_orchestrator.admission import parse_quantity
from model_services_orchestrator.leadership import ElectionTiming
from model_services_orchestrator.pod_specs import dns_label

__all__ = ["DEFAULT_SECRET_ENV_NAME_PATTERN", "Settings"]

DEFAULT_SECRET_ENV_NAME_PATTERN = r"(?i)(pass|secret|token|key|credential)"  # noqa: S105 (a pattern, not a password)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _parse_node_selector(value: str) -> dict[str, str]:
    selector: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        key, sep, label = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected key=value pairs separated by commas, got {item!r}")
        selector[key.strip()] = label.strip()
    return selector


def _parse_tolerations(value: str) -> list[dict[str, Any]]:
    try:
        parsed = json.loads(value or "[]")
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(parsed, list) or not all(isinstance(item, dict) for item in parsed):
        raise ValueError("expected a JSON list of toleration objects")
    return parsed


class Settings(BaseSettings):
    """Every setting of the daemon; field names are the env var names, lower-cased."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        hide_input_in_errors=True,
    )

    kubernetes_host: str = "localhost"
    kubernetes_port: int = 6443
    kubernetes_scheme: Literal["https", "http"] = "https"
    kubernetes_api_token: SecretStr | None = None
    kubernetes_ca_cert: Path | None = None
    kubernetes_pull_image_secret_name: str = ""
    kubernetes_namespace: str = "dots"
    kubernetes_request_timeout_seconds: float = Field(default=30.0, gt=0)
    kubernetes_watch_timeout_seconds: int = Field(default=300, gt=0)
    kubernetes_watch_silence_seconds: float = Field(default=90.0, gt=0)
    kubernetes_qps: float = Field(default=50.0, gt=0)
    kubernetes_burst: int = Field(default=100, gt=0)

    mqtt_host: str = "localhost"
    mqtt_port: int = Field(default=1883, gt=0, lt=65536)
    mqtt_username: str = ""
    mqtt_password: SecretStr = SecretStr("")
    mqtt_client_id: str = ""
    mqtt_keepalive_seconds: int = Field(default=30, gt=0)
    mqtt_publish_qos: int = Field(default=2, ge=1, le=2)
    mqtt_max_inflight_messages: int = Field(default=20, gt=0, le=65535)
    mqtt_connect_timeout_seconds: float = Field(default=60.0, gt=0)  # inf: the first connection is tried for ever

    simulator_name: str = "dots-so"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    model_cpu_request: str = "100m"
    model_memory_request: str = "128Mi"
    model_cpu_limit: str = "1"
    model_memory_limit: str = "1Gi"
    model_node_selector: str = "type=worker"
    model_tolerations: str = "[]"
    model_run_as_non_root: bool = False
    model_start_timeout_seconds: float = Field(default=300.0, gt=0)
    model_registry_sync_timeout_seconds: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    model_stop_grace_seconds: float = Field(default=30.0, ge=0)
    model_finish_timeout_seconds: float = Field(default=3600.0, gt=0, allow_inf_nan=False)
    ready_settle_seconds: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    model_healthcheck_interval_seconds: float = Field(default=0.0, ge=0)
    # Kueue admits each simulation whole: its pods carry this LocalQueue and one pod group per simulation.
    # The daemon's own admission by the namespace's ResourceQuota is then off (``admits_by_quota``).
    kueue_queue_name: str = ""
    report_failures_as_error_occurred: bool = True
    http_port: int = Field(default=8080, ge=0, lt=65536)
    http_host: str = "0.0.0.0"  # noqa: S104 (probes come from the kubelet, on the pod's address)

    pod_create_concurrency: int = Field(default=32, gt=0, le=512)
    min_cleanup_delay_seconds: float = Field(default=5.0, ge=0)
    max_keep_logs_hours: float = Field(default=168.0, ge=0, allow_inf_nan=False)
    failed_log_tail_lines: int = Field(default=30, ge=0)
    secret_env_name_pattern: str = DEFAULT_SECRET_ENV_NAME_PATTERN
    max_payload_bytes: int = Field(default=16 * 1024 * 1024, gt=0)

    # Admission of whole simulations by the namespace's ResourceQuota: on whenever one applies to our pods.
    quota_admission: bool = True
    admission_timeout_seconds: float | None = Field(default=None, gt=0)  # unset: a queued simulation waits for ever

    leader_election: bool = True
    leader_election_lease_seconds: float = Field(default=15.0, allow_inf_nan=False)
    leader_election_renew_seconds: float = Field(default=10.0, allow_inf_nan=False)
    leader_election_retry_seconds: float = Field(default=2.0, allow_inf_nan=False)
    pod_name: str = ""  # from the downward API: this replica's identity in the Lease

    @field_validator("kubernetes_port", mode="before")
    @classmethod
    def _port_from_service_link(cls, value: object) -> object:
        # Inside a pod the kubelet sets KUBERNETES_PORT=tcp://10.0.0.1:443 for
        # every container; take the port from it rather than failing start-up.
        if isinstance(value, str) and value.startswith("tcp://"):
            return value.rsplit(":", 1)[-1]
        return value

    @field_validator("kubernetes_ca_cert", "kubernetes_api_token", "admission_timeout_seconds", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `.env.template` lists every setting; an empty value there means "not set", not "the current directory".
        return None if value == "" else value

    @field_validator("model_cpu_request", "model_memory_request", "model_cpu_limit", "model_memory_limit")
    @classmethod
    def _quantity_or_empty(cls, value: str) -> str:
        # A typo (128MB) would make every pod Invalid, and admission's sums fail: refused at start instead.
        if value.strip():
            parse_quantity(value)  # ValueError: "... is no Kubernetes quantity"
        return value.strip()

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_log_format(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("kubernetes_namespace")
    @classmethod
    def _namespace_is_dns_label(cls, value: str) -> str:
        if not _DNS_LABEL.match(value):
            raise ValueError(f"{value!r} is not a valid namespace name (DNS-1123 label)")
        return value

    @field_validator("kueue_queue_name")
    @classmethod
    def _queue_is_dns_label(cls, value: str) -> str:
        # A label value on every pod: a name the API would refuse would fail every create.
        if value and not _DNS_LABEL.match(value):
            raise ValueError(f"{value!r} is not a valid LocalQueue name (DNS-1123 label)")
        return value

    @field_validator("secret_env_name_pattern")
    @classmethod
    def _pattern_compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
        return value

    @field_validator("model_node_selector")
    @classmethod
    def _selector_parses(cls, value: str) -> str:
        _parse_node_selector(value)
        return value

    @field_validator("model_tolerations")
    @classmethod
    def _tolerations_parse(cls, value: str) -> str:
        _parse_tolerations(value)
        return value

    @model_validator(mode="after")
    def _election_timing_usable(self) -> Settings:
        if problems := self.election_timing.problems():
            raise ValueError("LEADER_ELECTION_LEASE_SECONDS, _RENEW_SECONDS, _RETRY_SECONDS: " + "; ".join(problems))
        return self

    @property
    def api_tls_unverified(self) -> bool:
        """Whether the API server's certificate goes unchecked: a token over https and no ``KUBERNETES_CA_CERT``."""
        return (self.kubernetes_api_token is not None and bool(self.kubernetes_api_token.get_secret_value())
                and self.kubernetes_scheme == "https" and self.kubernetes_ca_cert is None)

    @property
    def election_timing(self) -> ElectionTiming:
        return ElectionTiming(self.leader_election_lease_seconds, self.leader_election_renew_seconds,
                              self.leader_election_retry_seconds)

    @property
    def admits_by_quota(self) -> bool:
        """Whether the daemon admits simulations by the namespace's ResourceQuota itself: ``QUOTA_ADMISSION``,
        and not when Kueue does (``KUEUE_QUEUE_NAME``), whose pod groups already wait whole for their quota."""
        return self.quota_admission and not self.kueue_queue_name

    @property
    def identity(self) -> str:
        """This replica's name in the Lease: ``POD_NAME``, else the host name."""
        return self.pod_name or socket.gethostname()

    @property
    def leader_lease_name(self) -> str:
        """The Lease the replicas serving this SO elect their leader on."""
        return dns_label("mso", self.so_name, "leader")

    @property
    def node_selector(self) -> dict[str, str]:
        """``MODEL_NODE_SELECTOR`` as a mapping; empty for none."""
        return _parse_node_selector(self.model_node_selector)

    @property
    def tolerations(self) -> list[dict[str, Any]]:
        return _parse_tolerations(self.model_tolerations)

    @property
    def so_name(self) -> str:
        """The ``<so>`` part of every topic: the simulator name, lower-cased."""
        return self.simulator_name.lower()

    @property
    def effective_mqtt_client_id(self) -> str:
        """A stable client id, so the broker keeps our session across restarts."""
        return self.mqtt_client_id or f"model-services-orchestrator-{self.so_name}"
