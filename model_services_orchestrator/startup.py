"""Start-up failures an operator must fix: what they mean, and which setting to change.

Why this exists: a daemon that cannot work as configured (a refused token, a
namespace it may not use, a broker that never answered) should end at once,
with exit code 2 and one line that names the setting to fix, instead of a
traceback or retries for ever. Deciding what a failure of the first calls
*means* is done here, apart from the calls themselves (``daemon``,
``k8s_api``, ``mqtt_session``).

Pure: no I/O, no clock.
"""

from __future__ import annotations

from model_services_orchestrator.kube_errors import TRANSIENT, Forbidden, KubeError, NotFound, Unauthorized

__all__ = [
    "EXIT_CONFIGURATION",
    "REFUSAL_CONFIRM_SECONDS",
    "StartupError",
    "broker_unreachable",
    "kube_refusal",
]

EXIT_CONFIGURATION = 2
"""The exit code of a configuration an operator must fix: a setting checked at start, or found unusable by trying."""

REFUSAL_CONFIRM_SECONDS = 4.0
"""How long the first Kubernetes calls must go on being refused before the daemon gives up: kube-apiserver
answers 403 (and may answer 401) for a second or two after it restarts, until its caches are filled."""


class StartupError(RuntimeError):
    """The daemon cannot start as configured; ``str()`` is the whole sentence, ``settings`` name what to fix."""

    def __init__(self, message: str, *, settings: tuple[str, ...]) -> None:
        super().__init__(message)
        self.settings = settings


def _said(error: KubeError) -> str:
    """The server's own words, if it gave any (its Status message names the user and the verb of a 403)."""
    return f" (the server said: {error.message})" if error.message else ""


def kube_refusal(error: KubeError, *, namespace: str, credentials: str, server: str) -> StartupError | None:
    """What a refusal of the first Kubernetes calls (``KubernetesGateway.check_access``) means.

    ``credentials`` names where the token comes from (``KUBERNETES_API_TOKEN``, the in-cluster service
    account, a kubeconfig); ``server`` is the API server's address. ``None`` when ``error`` proves nothing
    about the configuration: a transient failure (no answer, 429, 5xx) is waited out, and an answer that is
    neither 401, 403 nor a missing namespace is left to the daemon's usual handling.

    With RBAC a namespace that does not exist is refused (403) like one the Role does not cover: the
    authorizer answers before anyone looks for the namespace, and the daemon's Role does not let it read
    namespaces. Only a token allowed in every namespace gets to hear that it does not exist (404).
    """
    if isinstance(error, TRANSIENT):
        return None
    if isinstance(error, Unauthorized):
        return StartupError(
            f"the Kubernetes API server {server} refuses the token of {credentials} (401 Unauthorized): "
            f"it is expired, revoked or not a token of this cluster; set {credentials} to a valid token",
            settings=(credentials,))
    if isinstance(error, Forbidden):
        return StartupError(
            f"KUBERNETES_NAMESPACE {namespace!r}: the token of {credentials} may not {error.what or 'work'} there "
            f"(403 Forbidden): the namespace does not exist, or no Role there gives this token what "
            f"k8s_cluster_configuration/role.yaml grants; set KUBERNETES_NAMESPACE to the namespace of the "
            f"daemon's Role, or use a token bound to a Role in {namespace!r}{_said(error)}",
            settings=("KUBERNETES_NAMESPACE", credentials))
    if isinstance(error, NotFound) and f'namespaces "{namespace}" not found' in error.message:
        return StartupError(
            f"KUBERNETES_NAMESPACE {namespace!r}: the namespace does not exist on the Kubernetes API server "
            f"{server} (404 on {error.what or 'the first call'}); create it, or set KUBERNETES_NAMESPACE to "
            f"the daemon's namespace",
            settings=("KUBERNETES_NAMESPACE",))
    return None


def broker_unreachable(*, host: str, port: int, waited_seconds: float, last_error: str) -> StartupError:
    """The broker never accepted a first connection within ``MQTT_CONNECT_TIMEOUT_SECONDS``."""
    return StartupError(
        f"no MQTT broker accepted a connection at {host}:{port} in {waited_seconds:.0f} s (last attempt: "
        f"{last_error}); check MQTT_HOST and MQTT_PORT, or raise MQTT_CONNECT_TIMEOUT_SECONDS if the broker "
        f"starts later than the daemon",
        settings=("MQTT_HOST", "MQTT_PORT"))
