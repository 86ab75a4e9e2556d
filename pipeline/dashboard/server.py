"""Serve the dashboard app with uvicorn in a thread (its own event loop), so the pipeline's loop never waits
for a browser. The socket is bound before the thread starts: a taken port is an OSError at start()."""

from __future__ import annotations

import logging
import socket
import threading

import uvicorn

log = logging.getLogger("pipeline.dashboard")


class DashboardServer:
    def __init__(self, app, host: str, port: int, stopping: threading.Event | None = None) -> None:
        self.app, self.host, self.port = app, host, port
        self.stopping = stopping or threading.Event()  # tells open event streams to end
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Bind and serve; returns the bound port (port 0 picks a free one). Raises OSError when it cannot bind."""
        infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            sock.listen(64)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2, ws="none")
        self._server = uvicorn.Server(config)
        self._sock = sock

        def serve() -> None:
            try:
                self._server.run(sockets=[sock])
            except Exception:  # never take the pipeline down with it
                log.exception("dashboard: the web server stopped")

        self._thread = threading.Thread(target=serve, name="dashboard", daemon=True)
        self._thread.start()
        return self.port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def stop(self, timeout_s: float = 5.0) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        try:
            self._sock.close()
        except (AttributeError, OSError):
            pass
