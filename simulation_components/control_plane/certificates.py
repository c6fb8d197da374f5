"""The keys and certificates a real control plane needs, made with the ``openssl`` command line.

kube-apiserver needs a small PKI: a CA that clients verify the API server against, the API server's serving
certificate, the client certificate it shows the kubelet when it fetches logs, the kubelet's serving
certificate (which the API server verifies against the same CA), and the key pair that signs and checks
service-account tokens.
ECDSA P-256 keys throughout: generated in milliseconds (start-up time matters), accepted by Go's TLS and
token code and by Python's ``ssl``. Each certificate carries the key identifiers and key usages that strict
X.509 verification (Python 3.13's default) asks for.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ControlPlaneCertificates", "generate_control_plane_certificates", "issue_serving_certificate"]

_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
_LOCAL_NAMES = "DNS:localhost,IP:127.0.0.1"


@dataclass(frozen=True, slots=True)
class ControlPlaneCertificates:
    """Paths of the generated PEM files."""

    ca_cert: Path
    ca_key: Path
    apiserver_cert: Path
    apiserver_key: Path
    kubelet_client_cert: Path
    kubelet_client_key: Path
    kubelet_cert: Path
    kubelet_key: Path
    service_account_key: Path
    service_account_public_key: Path


def _openssl(*args: str | Path) -> None:
    executable = shutil.which("openssl")
    if executable is None:
        raise RuntimeError("the openssl command line tool is needed to generate the control plane's certificates")
    result = subprocess.run([executable, *map(str, args)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def _issue(folder: Path, name: str, subject: str, ca: tuple[Path, Path], days: int, *extensions: str) -> None:
    """``name.crt`` and ``name.key`` signed by ``ca`` (OpenSSL 3's ``req -x509 -CA``, one command)."""
    ca_cert, ca_key = ca
    arguments: list[str | Path] = ["req", "-x509", *_EC_KEY, "-keyout", folder / f"{name}.key",
                                   "-out", folder / f"{name}.crt", "-days", str(days), "-subj", subject,
                                   "-CA", ca_cert, "-CAkey", ca_key, "-addext", "basicConstraints=critical,CA:FALSE",
                                   "-addext", "keyUsage=critical,digitalSignature"]
    for extension in extensions:
        arguments += ["-addext", extension]
    _openssl(*arguments)


def generate_control_plane_certificates(directory: str | Path, *, days: int = 30,
                                        node_name: str = "local-node") -> ControlPlaneCertificates:
    """Write the control plane's CA, certificates and keys into ``directory`` (keys readable by the owner only)."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    ca = (folder / "ca.crt", folder / "ca.key")
    _openssl("req", "-x509", *_EC_KEY, "-keyout", ca[1], "-out", ca[0], "-days", str(days),
             "-subj", "/CN=mso-control-plane-ca", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature")
    _issue(folder, "apiserver", "/CN=kube-apiserver", ca, days, "extendedKeyUsage=serverAuth",
           f"subjectAltName={_LOCAL_NAMES},DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,"
           "IP:10.0.0.1")
    # Organisation system:masters, as kubeadm's apiserver-kubelet-client: a kubelet that authorises the
    # API server's requests by this certificate (webhook or by group) lets it read logs.
    _issue(folder, "apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", ca, days,
           "extendedKeyUsage=clientAuth")
    _issue(folder, "kubelet", f"/O=system:nodes/CN=system:node:{node_name}", ca, days, "extendedKeyUsage=serverAuth",
           f"subjectAltName={_LOCAL_NAMES},DNS:{node_name}")
    service_account_key, service_account_public_key = folder / "sa.key", folder / "sa.pub"
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", service_account_key)
    _openssl("pkey", "-in", service_account_key, "-pubout", "-out", service_account_public_key)
    for key in folder.glob("*.key"):
        key.chmod(0o600)
    return ControlPlaneCertificates(
        ca_cert=ca[0], ca_key=ca[1],
        apiserver_cert=folder / "apiserver.crt", apiserver_key=folder / "apiserver.key",
        kubelet_client_cert=folder / "apiserver-kubelet-client.crt",
        kubelet_client_key=folder / "apiserver-kubelet-client.key",
        kubelet_cert=folder / "kubelet.crt", kubelet_key=folder / "kubelet.key",
        service_account_key=service_account_key, service_account_public_key=service_account_public_key)


def issue_serving_certificate(directory: str | Path, name: str, ca_cert: Path, ca_key: Path, *,
                              days: int = 30) -> tuple[Path, Path]:
    """``name.crt`` and ``name.key`` in ``directory``: a serving certificate for 127.0.0.1 and localhost signed by
    the control plane's CA (e.g. for the fault proxy, which clients verify against the same CA)."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    _issue(folder, name, f"/CN={name}", (ca_cert, ca_key), days, "extendedKeyUsage=serverAuth",
           f"subjectAltName={_LOCAL_NAMES}")
    (folder / f"{name}.key").chmod(0o600)
    return folder / f"{name}.crt", folder / f"{name}.key"
