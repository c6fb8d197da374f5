"""``python -m model_services_orchestrator`` and the ``model-services-orchestrator`` console script.

Reads the settings, sets up logging and runs the daemon; an unusable
configuration ends here with one clear line and exit code 2 (as does one the
daemon finds unusable by trying: ``startup``). ``--help`` and
``--version`` answer without starting anything: every setting is an
environment variable, so there are no other arguments.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from pydantic import ValidationError

from model_services_orchestrator import __version__
from model_services_orchestrator.daemon import run
from model_services_orchestrator.k8s_api import ConfigurationError, build_api_client
from model_services_orchestrator.logs import SecretRedactor, configure_logging, get_logger
from model_services_orchestrator.settings import Settings
from model_services_orchestrator.startup import EXIT_CONFIGURATION

__all__ = ["main"]

_CONFIGURATION_ERROR = EXIT_CONFIGURATION


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]).upper() or "settings"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def _read_arguments(argv: Sequence[str] | None) -> None:
    """``--help`` and ``--version`` print and exit 0; any other argument is an error (exit 2)."""
    parser = argparse.ArgumentParser(
        prog="model-services-orchestrator",
        description="Runs the models of DOTS simulations as Kubernetes pods, driven over MQTT.",
        epilog="Every setting is an environment variable (or a line of ./.env): see the README's table and "
               ".env.template. An unusable one ends the daemon at start with one line and exit code 2.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    _read_arguments(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"model-services-orchestrator: configuration error: {_describe(exc)}", file=sys.stderr)
        return _CONFIGURATION_ERROR
    redactor = SecretRedactor()
    secrets = [settings.mqtt_password.get_secret_value()]
    if settings.kubernetes_api_token is not None:
        secrets.append(settings.kubernetes_api_token.get_secret_value())
    redactor.add(secrets)
    configure_logging(level=settings.log_level, log_format=settings.log_format, redactor=redactor)
    try:
        build_api_client(settings).close()
    except ConfigurationError as exc:
        print(f"model-services-orchestrator: configuration error: {exc}", file=sys.stderr)
        return _CONFIGURATION_ERROR
    log = get_logger(__name__)
    log.info("starting", simulator_name=settings.simulator_name, namespace=settings.kubernetes_namespace,
             mqtt_host=settings.mqtt_host, mqtt_port=settings.mqtt_port)
    if settings.api_tls_unverified:
        log.warning("the Kubernetes API server's TLS certificate is not verified: any server can pose as it and "
                    "receive the token; set KUBERNETES_CA_CERT to the CA file of the API server",
                    setting="KUBERNETES_CA_CERT", kubernetes_host=settings.kubernetes_host)
    _exit_now(run(settings, redactor))


def _exit_now(code: int) -> NoReturn:
    """End the process with ``code`` once the output is flushed, without the interpreter's finalization.

    The pod watch runs in a daemon thread that may be inside a TLS read or write when the daemon ends
    (e.g. at once, on a refused MQTT login). On Python 3.11, such a thread that wants the GIL back during
    finalization calls ``pthread_exit``, whose unwinding through the ``ssl`` module aborts the whole
    process: SIGABRT, exit status 134 instead of the daemon's own. Everything worth finishing (records,
    the MQTT flush, the thread pool) is finished when ``run`` returns.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
