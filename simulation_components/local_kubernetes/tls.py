"""Certificates for serving HTTPS on 127.0.0.1/localhost, made with the ``openssl`` command line.

A throwaway CA signs a server certificate with the right subjectAltNames, so clients verify the server
against the CA file exactly as they would verify a real cluster's API server.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Certificates", "generate_certificates"]


@dataclass(frozen=True, slots=True)
class Certificates:
    """Paths of the generated files."""

    ca_cert: Path
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    executable = shutil.which("openssl")
    if executable is None:
        raise RuntimeError("the openssl command line tool is needed to generate certificates")
    subprocess.run([executable, *args], check=True, capture_output=True)


def generate_certificates(directory: str | Path, *, days: int = 7) -> Certificates:
    """Write ``ca.crt``, ``server.crt`` and ``server.key`` for 127.0.0.1, ::1 and localhost into ``directory``."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = folder / "ca.key", folder / "ca.crt"
    key, request, cert = folder / "server.key", folder / "server.csr", folder / "server.crt"
    extensions = folder / "server.ext"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca_cert),
             "-days", str(days), "-subj", "/CN=local-kubernetes-ca",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(request),
             "-subj", "/CN=localhost")
    extensions.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n"
        "authorityKeyIdentifier=keyid,issuer\n"
        "subjectKeyIdentifier=hash\n")
    _openssl("x509", "-req", "-in", str(request), "-CA", str(ca_cert), "-CAkey", str(ca_key),
             "-CAcreateserial", "-out", str(cert), "-days", str(days), "-sha256", "-extfile", str(extensions))
    key.chmod(0o600)
    ca_key.chmod(0o600)
    return Certificates(ca_cert=ca_cert, cert=cert, key=key)
