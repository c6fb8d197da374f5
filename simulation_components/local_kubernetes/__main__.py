"""Command line entry point: ``python -m simulation_components.local_kubernetes --port 0 --token T``.

Prints one JSON line ``{"url": ..., "port": ...}`` to stdout once listening (the launcher waits for it),
logs to stderr, and runs until SIGTERM or SIGINT, then stops its containers and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import ssl
import sys

from .images import load_images
from .kubelet import KUBELET_MODES
from .server import LocalKubernetesServer, ServerSettings

__all__ = ["main"]


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simulation_components.local_kubernetes",
                                     description="A local Kubernetes API server with one fake node, for tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token", required=True, help="the bearer token clients must send")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="the certificate's private key (PEM)")
    parser.add_argument("--kubelet", choices=KUBELET_MODES, default="process")
    parser.add_argument("--images-file", help="JSON object image -> argv list (or null: a missing image)")
    parser.add_argument("--bookmark-interval", type=float, default=5.0, help="seconds between watch bookmarks")
    parser.add_argument("--history", type=int, default=20_000, help="events kept for watch resumption")
    parser.add_argument("--watch-timeout", type=float, default=1800.0,
                        help="server-side watch timeout when the client gives none (randomised up to 2x)")
    parser.add_argument("--log-level", default="WARNING")
    arguments = parser.parse_args(argv)
    if bool(arguments.tls_cert) != bool(arguments.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    return arguments


async def _serve(arguments: argparse.Namespace) -> None:
    settings = ServerSettings(token=arguments.token, kubelet_mode=arguments.kubelet,
                              images=load_images(arguments.images_file),
                              bookmark_interval=arguments.bookmark_interval, history_size=arguments.history,
                              default_watch_timeout=arguments.watch_timeout)
    ssl_context = None
    if arguments.tls_cert:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(arguments.tls_cert, arguments.tls_key)
    server = LocalKubernetesServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    port = await server.start(arguments.host, arguments.port, ssl_context)
    scheme = "https" if ssl_context else "http"
    host = f"[{arguments.host}]" if ":" in arguments.host else arguments.host
    sys.stdout.write(json.dumps({"url": f"{scheme}://{host}:{port}", "port": port}) + "\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGTERM/SIGINT; returns the exit status."""
    arguments = _arguments(argv)
    logging.basicConfig(level=arguments.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(arguments))
    return 0


if __name__ == "__main__":
    sys.exit(main())
