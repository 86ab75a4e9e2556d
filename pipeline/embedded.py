"""The `embedded` store: one private redis-server per output directory, shared by the processes using it.

Who may stop it (issue 13): every process that uses the server — a `run`, or a reader such as `events`
or `identities` — is recorded in `<store>/users.json` (pid, its start time so a reused pid is not taken
for it, role, a token), under an exclusive lock (`<store>/users.lock`). A process leaving removes its own
entry; the server is stopped (SHUTDOWN: the append-only file is flushed) only by the last one to leave,
so a reader never stops a server a run is using, and a run never stops it under a follower that still
reads it. The server runs in its own session, so a Ctrl-C in a terminal reaches the pipeline (which
then drains its events) and never the server.

An orphan — a server still running while none of its recorded users is (its run was killed with
SIGKILL), or a server the file does not describe — is detected when the next process arrives, said
in the log, and restarted under that process: SHUTDOWN (its data are flushed) and a fresh start.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import redis

from pipeline.redact import redact
from pipeline.redis_server import RedisServer, shutdown

log = logging.getLogger("pipeline.store")
Role = Literal["run", "reader"]
LOCK_TIMEOUT_S = 30.0  # another process holds the lock only while it starts or stops the server


def process_start(pid: int) -> str | None:
    """The start time of `pid` (clock ticks since boot, from /proc), or None when no such process runs:
    with the pid it names one process, even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        if not Path("/proc/self/stat").exists():  # no /proc here: fall back to "a process has this pid"
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return None
            except PermissionError:
                return "?"
            return "?"
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has ended; only its parent has not reaped it yet
        return None
    return fields[19]


@dataclass(frozen=True)
class StoreUser:
    pid: int
    started: str  # process_start(pid) when it attached
    role: str  # "run" | "reader"
    token: str  # this attachment (one process may attach twice)

    def alive(self) -> bool:
        return process_start(self.pid) == self.started


@dataclass
class ServerRecord:
    server_pid: int
    server_run_id: str  # the server's own INFO run_id: which server instance this record describes
    users: list[StoreUser] = field(default_factory=list)


class EmbeddedServer:
    """One output directory's embedded redis-server, attached to by this process in one role."""

    def __init__(self, data_dir: str | Path) -> None:
        self.server = RedisServer(data_dir)
        self.data_dir = self.server.data_dir
        self.record_path = self.data_dir / "users.json"
        self.lock_path = self.data_dir / "users.lock"
        self.me: StoreUser | None = None

    def client(self, **kwargs) -> redis.Redis:
        return self.server.client(**kwargs)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as fh:
            deadline = time.monotonic() + LOCK_TIMEOUT_S
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{self.lock_path} stayed locked for {LOCK_TIMEOUT_S:.0f} s: another "
                                           "process is stuck starting or stopping the embedded store") from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _read(self) -> ServerRecord | None:
        try:
            raw = json.loads(self.record_path.read_text())
            return ServerRecord(int(raw["server_pid"]), str(raw["server_run_id"]),
                                [StoreUser(**u) for u in raw.get("users", [])])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("embedded store: %s is unreadable (%s): treating the server as unowned", self.record_path, exc)
            return None

    def _write(self, record: ServerRecord | None) -> None:
        if record is None:
            self.record_path.unlink(missing_ok=True)
            return
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"server_pid": record.server_pid, "server_run_id": record.server_run_id,
                                   "users": [asdict(u) for u in record.users]}, indent=1))
        tmp.replace(self.record_path)

    def _running(self) -> tuple[int, str] | None:
        """(pid, run_id) of the server answering on this directory's socket, or None."""
        if not self.server.alive():
            return None
        with self.client(socket_timeout=2) as c:
            info = c.info("server")
        return int(info["process_id"]), str(info["run_id"])

    def _stop_running(self, pid: int) -> None:
        """Stop a server this process may not have started (SHUTDOWN, then wait for it to be gone)."""
        if self.server.process is not None and self.server.process.pid == pid:
            self.server.stop()
            return
        shutdown(self.client, nosave=False)
        deadline = time.monotonic() + 15
        while process_start(pid) is not None and self.server.alive() and time.monotonic() < deadline:
            time.sleep(0.05)

    def attach(self, role: Role) -> "EmbeddedServer":
        with self._locked():
            record = self._read()
            running = self._running()
            if running is not None:
                pid, run_id = running
                users = [u for u in record.users if u.alive()] if record and record.server_run_id == run_id else []
                if not users:
                    left_by = (", ".join(f"{u.role} pid {u.pid}" for u in record.users) or "nobody recorded"
                               ) if record and record.server_run_id == run_id else "a process this file does not name"
                    log.warning("embedded store: the redis-server (pid %d) serving %s was left running by %s, which "
                                "no longer runs (killed?): restarting it under this %s", pid, self.data_dir,
                                left_by, role)
                    self._stop_running(pid)
                    running, record = None, None
                else:
                    record.users = users
            if running is None:
                self.server.start()
                pid, run_id = self._running() or (self.server.pid, "")
                record = ServerRecord(pid, run_id)
            self.me = StoreUser(os.getpid(), process_start(os.getpid()) or "?", role, uuid.uuid4().hex)
            record.users.append(self.me)
            self._write(record)
        return self

    def detach(self) -> None:
        """Leave; the last user to leave stops the server (its data are flushed to the append-only file)."""
        if self.me is None:
            return
        with self._locked():
            record = self._read()
            running = self._running()
            if record is None or running is None or running[1] != record.server_run_id:
                self.me = None
                return  # stopped or replaced meanwhile: nothing of ours to leave
            record.users = [u for u in record.users if u.token != self.me.token and u.alive()]
            self.me = None
            if record.users:
                self._write(record)
                return
            self._stop_running(running[0])
            self._write(None)


@contextmanager
def open_store_client(url: str, embedded_dir: str | Path, role: Role, **client_kwargs) -> Iterator[redis.Redis]:
    """A Redis client for a store URL. `embedded` attaches to the output directory's private server
    (starting it when none runs) in `role`; leaving stops it only when no other process uses it.
    `client_kwargs` go to redis.Redis (the runner passes short timeouts: pipeline.outage)."""
    if url == "embedded":
        server = EmbeddedServer(embedded_dir).attach(role)
        try:
            client = server.client(**client_kwargs)
            try:
                yield client
            finally:
                client.close()
        finally:
            server.detach()
        return
    client = redis.Redis.from_url(url, **{"socket_connect_timeout": 5, **client_kwargs})
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        raise ConnectionError(f"cannot reach the store at {redact(url)}: {redact(str(exc))}") from exc
    try:
        yield client
    finally:
        client.close()
