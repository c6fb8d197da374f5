"""The control-plane kubelet's connection to kube-apiserver: raw JSON over one aiohttp session.

Not the official ``kubernetes`` client: that one is synchronous, builds model objects for every answer
and has a known bug on ``pods/binding`` answers; at a thousand pods a second (a binding and a status
write each, plus the watch events) a pooled asyncio session with orjson is what keeps up. The kubeconfig
is read directly (server, CA, client certificate or token), as the launcher's admin kubeconfig gives them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
import tempfile
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml  # type: ignore[import-untyped]  # no types-PyYAML among the dev pins

from .api import ApiError

__all__ = ["ApiError", "KubeApi", "KubeConfig", "read_kubeconfig"]

log = logging.getLogger(__name__)

Obj = dict[str, Any]

# Statuses worth another try: the server is busy or restarting.
_RETRYABLE = frozenset({429, 500, 502, 503, 504})
_TIMEOUT = aiohttp.ClientTimeout(total=60)


class KubeConfig:
    """Where the API server is and how to authenticate, from a kubeconfig file."""

    def __init__(self, server: str, ssl_context: ssl.SSLContext | bool, token: str | None) -> None:
        self.server = server.rstrip("/")
        self.ssl_context = ssl_context
        self.token = token


def _material(entry: Mapping[str, Any], key: str, base: Path, scratch: Path) -> str | None:
    """A file path for ``key`` (or ``key-data``, written into ``scratch``), relative paths against ``base``."""
    data = entry.get(f"{key}-data")
    if data:
        path = scratch / key
        path.write_bytes(base64.b64decode(data))
        return str(path)
    value = entry.get(key)
    if not value:
        return None
    path = Path(str(value))
    return str(path if path.is_absolute() else base / path)


def read_kubeconfig(path: str | Path) -> KubeConfig:
    """The current context's cluster and user (client certificate and/or token)."""
    path = Path(path)
    config = yaml.safe_load(path.read_text())
    context_name = config.get("current-context")
    contexts = {c["name"]: c["context"] for c in config.get("contexts") or []}
    context = contexts.get(context_name) if context_name else next(iter(contexts.values()), None)
    if context is None:
        raise ValueError(f"{path}: no current context")
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next((u.get("user") or {} for u in config.get("users") or [] if u["name"] == context.get("user")), {})
    base = path.parent
    scratch = Path(tempfile.mkdtemp(prefix="kubelet-kubeconfig-"))
    server = str(cluster["server"])
    ssl_context: ssl.SSLContext | bool = True
    if server.startswith("https"):
        ca = _material(cluster, "certificate-authority", base, scratch)
        context_ = ssl.create_default_context(cafile=ca)
        if cluster.get("insecure-skip-tls-verify"):
            context_.check_hostname = False
            context_.verify_mode = ssl.CERT_NONE
        cert = _material(user, "client-certificate", base, scratch)
        key = _material(user, "client-key", base, scratch)
        if cert and key:
            context_.load_cert_chain(cert, key)
        ssl_context = context_
    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = Path(str(user["tokenFile"])).read_text().strip()
    for leftover in scratch.iterdir():  # the SSL context holds the material now
        leftover.unlink()
    scratch.rmdir()
    return KubeConfig(server, ssl_context, str(token) if token else None)


class KubeApi:
    """JSON requests with retries on transient failures, at most ``concurrency`` at a time, plus watches."""

    def __init__(self, config: KubeConfig, *, concurrency: int = 64) -> None:
        self._config = config
        self._limit = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None
        self._headers = {"Accept": "application/json"}
        if config.token:
            self._headers["Authorization"] = f"Bearer {config.token}"

    async def __aenter__(self) -> KubeApi:
        connector = aiohttp.TCPConnector(limit=0, ssl=self._config.ssl_context)
        self._session = aiohttp.ClientSession(connector=connector, headers=self._headers,
                                              json_serialize=lambda value: orjson.dumps(value).decode())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The open session (inside ``async with``)."""
        assert self._session is not None, "use KubeApi inside async with"
        return self._session

    async def request(self, method: str, path: str, body: Any = None, *, params: Mapping[str, str] | None = None,
                      content_type: str = "application/json", attempts: int = 8, decode: bool = True,
                      limited: bool = True) -> Any:
        """One call; its decoded JSON answer (``None`` without ``decode``). ``ApiError`` on an error status
        (after retrying 429/5xx and connection failures ``attempts`` times, with a growing pause).
        ``limited=False``: not queued behind the writes (lists must not wait for thousands of bindings)."""
        data = None if body is None else orjson.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else None
        pause = 0.2
        for attempt in range(attempts):
            try:
                async with self._limit if limited else contextlib.nullcontext(), self.session.request(
                        method, self._config.server + path, data=data, params=params, headers=headers,
                        timeout=_TIMEOUT) as response:
                    raw = await response.read()
                    if response.status < 400:
                        return orjson.loads(raw) if raw and decode else None
                    answer: Any = _decode(raw)
                    if response.status not in _RETRYABLE or attempt == attempts - 1:
                        raise ApiError(method, path, response.status, answer)
                    log.info("%s %s: %s, retrying", method, path, response.status)
            except (aiohttp.ClientConnectionError, TimeoutError) as error:
                if attempt == attempts - 1:
                    raise
                log.info("%s %s failed (%s), retrying", method, path, error)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)
        raise AssertionError("unreachable")

    async def watch(self, path: str, params: Mapping[str, str]) -> AsyncGenerator[Obj, None]:
        """The events of one watch request, decoded, until the server ends it (the caller resumes)."""
        async with self.session.get(self._config.server + path, params={**params, "watch": "true"},
                                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)) as response:
            if response.status >= 400:
                raise ApiError("WATCH", path, response.status, _decode(await response.read()))
            pending = b""
            async for chunk in response.content.iter_any():
                pending += chunk
                if b"\n" not in chunk:
                    continue
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield orjson.loads(line)
            if pending.strip():
                with contextlib.suppress(orjson.JSONDecodeError):
                    yield orjson.loads(pending)


def _decode(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode(errors="replace")
