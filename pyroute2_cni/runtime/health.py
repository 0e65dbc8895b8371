"""/livez, /readyz and /metrics on one small HTTP server (port 24800 by default)."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pyroute2_cni.runtime.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthReport:
    live: bool
    ready: bool
    # One line per actor: "name: ready" / "name: not ready (why)".
    lines: tuple[str, ...]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    # Peers probe every second and the kubelet probes too; a daemon busy starting may not
    # accept for seconds.  With socketserver's default queue of 5 the kernel then drops
    # their SYNs, and a peer whose connection times out takes this node for gone.
    request_queue_size = 128

    def handle_error(self, request: object, client_address: object) -> None:
        # A probe that timed out (the kubelet's, a peer's) has closed its socket before
        # the answer was written: routine under load, not worth a traceback on stderr.
        exc = sys.exc_info()[1]
        if isinstance(exc, (BrokenPipeError, ConnectionResetError)):
            log.debug("health: %s went away before the answer (%s)", client_address, exc)
            return
        log.exception("health: a request from %s failed", client_address)


class HealthServer:
    def __init__(
        self,
        address: str,
        port: int,
        report: Callable[[], HealthReport],
        metrics: Metrics,
    ) -> None:
        self._report = report
        self._metrics = metrics
        handler = self._make_handler()
        self._server = _QuietServer((address, port), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2)

    def _make_handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/livez":
                    report = server._report()
                    self._text(200 if report.live else 503, report.lines, report.live)
                elif path == "/readyz":
                    report = server._report()
                    self._text(200 if report.ready else 503, report.lines, report.ready)
                elif path == "/metrics":
                    body = generate_latest(server._metrics.registry)
                    self._send(200, CONTENT_TYPE_LATEST, body)
                else:
                    self._send(404, "text/plain", b"not found: try /livez, /readyz, /metrics\n")

            def _text(self, code: int, lines: tuple[str, ...], ok: bool) -> None:
                body = ("ok\n" if ok else "failed\n") + "".join(f"{line}\n" for line in lines)
                self._send(code, "text/plain; charset=utf-8", body.encode())

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("health: " + format, *args)

        return Handler
