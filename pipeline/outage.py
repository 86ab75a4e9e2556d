"""Store outages: which store errors are an outage, and the link that rides one out.

Every error a store call raises is classified once, here:

* transient (`is_transient`): the store is unreachable or cannot take writes for now: connection refused or
  reset, a timeout, and the replies LOADING (restarting, loading its data), READONLY (a primary demoted to
  replica), OOM (maxmemory reached with noeviction), MISCONF (it cannot persist: disk full, unwritable
  dir), BUSY (a long script), MASTERDOWN, TRYAGAIN. The run treats all of them alike as an outage:
  events wait in a bounded buffer, decisions wait, the store is retried with backoff, and what is still
  undelivered at the end is written to `undelivered_events.jsonl`.
* everything else is fatal: a wrong password, a command the server refuses as malformed (WRONGTYPE, ERR),
  a bug in our code. Retrying cannot fix it, so it fails loud (`StoreFailure`, exit 1, traceback in the
  log) instead of being buffered forever.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from typing import Callable, Iterable, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from pipeline.events import IdentityEvent

log = logging.getLogger("pipeline.store")
T = TypeVar("T")

# Error codes of a Redis reply that mean "not now" rather than "never".
TRANSIENT_REPLY_CODES = ("LOADING", "READONLY", "OOM", "MISCONF", "BUSY", "MASTERDOWN", "TRYAGAIN", "NOREPLICAS")
_TRANSIENT_CLASSES = (redis.exceptions.ReadOnlyError, redis.exceptions.OutOfMemoryError,
                      redis.exceptions.BusyLoadingError, redis.exceptions.TryAgainError,
                      redis.exceptions.MasterDownError)
_NEVER_TRANSIENT = (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError,
                    redis.exceptions.NoPermissionError)

# What a run's client does on its own: connect and reply timeouts, so a frozen store costs one call at most
# CALL_TIMEOUT_S; one quick retry only for a dropped idle connection (never for a timeout: the worker's
# own backoff decides when to try again).
CONNECT_TIMEOUT_S = 2.0
CALL_TIMEOUT_S = 5.0


def runtime_client_options() -> dict:
    return {"socket_connect_timeout": CONNECT_TIMEOUT_S, "socket_timeout": CALL_TIMEOUT_S,
            "retry": Retry(ExponentialBackoff(cap=0.2, base=0.05), 1, supported_errors=(redis.ConnectionError,))}


def _reply_code(exc: BaseException) -> str:
    """The error code of a Redis error reply ("OOM", "MISCONF"...), also when a script or a transaction
    wraps it ("ERR Error running script ... OOM command not allowed ...")."""
    text = str(exc)
    first = text.split(" ", 1)[0]
    if first in TRANSIENT_REPLY_CODES:
        return first
    for code in TRANSIENT_REPLY_CODES:
        if f" {code} " in f" {text} " or f"-{code} " in text:
            return code
    return ""


def is_transient(exc: BaseException) -> bool:
    """True when the store may answer again later (an outage); False for errors retrying cannot fix."""
    if isinstance(exc, _NEVER_TRANSIENT):
        return False
    if isinstance(exc, _TRANSIENT_CLASSES):
        return True
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, socket.timeout, ConnectionError,
                        TimeoutError)):
        return True
    if isinstance(exc, redis.ResponseError):
        return bool(_reply_code(exc))
    return False


class StoreUnavailable(RuntimeError):
    """The store cannot be reached or cannot take writes now; the caller defers what needed it."""


class StoreFailure(RuntimeError):
    """A store error retrying cannot fix (wrong password, a refused command, a bug): the run fails loud."""


class StoreLink:
    """The state of the run's connection to its store: up or down, when to try again, and the outbox of
    events waiting to be published. Thread-safe: the frame loop `enqueue`s events (never touching the
    network), the store worker makes the calls (`call`, `flush`).

    Events wait in a bounded outbox (oldest dropped, and counted, only beyond `max_buffered`) and are
    published in order once the store answers again; calls are refused at once while the store is down
    and not yet due for a retry; retries back off exponentially. Delivery is at least once: a batch cut
    by the outage may be published twice (events carry `event_id` for consumers that must deduplicate).
    `up` is False during an outage and also while a call has been in flight longer than `call_timeout_s`
    (a frozen store answers nothing, not even an error, until the client's timeout fires).
    """

    def __init__(self, store, where: str, max_buffered: int = 100_000, retry_initial_s: float = 0.5,
                 retry_max_s: float = 5.0, call_timeout_s: float = CALL_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.where = where  # redacted store URL, for messages
        self.outbox: deque[IdentityEvent] = deque()
        self.max_buffered = max_buffered
        self.dropped = 0
        self.published = 0
        self.outages = 0
        self.call_timeout_s = call_timeout_s
        # Called (in the publishing thread) with each batch the store took and when: latency metrics.
        self.on_published: Callable[[list[IdentityEvent], float], None] | None = None
        # Called on events as they are queued (any thread): the runner fills in fields only it knows
        # (video_time_s from the camera's frame index).
        self.stamp: Callable[[list[IdentityEvent]], None] | None = None
        self._up = True
        self._lock = threading.Lock()
        self._clock = clock
        self._initial, self._max = retry_initial_s, retry_max_s
        self._delay = retry_initial_s
        self._next_try = 0.0
        self._down_since: float | None = None
        self._in_flight_since: float | None = None

    @property
    def up(self) -> bool:
        started = self._in_flight_since
        stalled = started is not None and self._clock() - started > self.call_timeout_s
        return self._up and not stalled

    def ready(self) -> bool:
        """True when the store is up, or down but due for another try."""
        return self._up or self._clock() >= self._next_try

    def retry_in(self) -> float:
        """Seconds until the next try is due (0 when the store is up)."""
        return 0.0 if self._up else max(0.0, self._next_try - self._clock())

    def call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """Run one store call: StoreUnavailable for an outage (recorded, retried later), StoreFailure for an
        error retrying cannot fix."""
        if not self.ready():
            raise StoreUnavailable(f"store at {self.where} is unreachable")
        self._in_flight_since = self._clock()
        try:
            result = fn(*args, **kwargs)
        except (redis.RedisError, OSError) as exc:
            if not is_transient(exc):
                raise StoreFailure(f"store at {self.where}: {type(exc).__name__}: {exc}") from exc
            self._went_down(exc)
            raise StoreUnavailable(f"store at {self.where} is unavailable: {exc}") from exc
        finally:
            self._in_flight_since = None
        self._came_back()
        return result

    # -- the outbox ----------------------------------------------------------------------------------
    def enqueue(self, events: Iterable[IdentityEvent]) -> None:
        """Queue events in the order they were made (any thread; never waits on the network)."""
        if self.stamp is not None:
            events = list(events)
            self.stamp(events)
        with self._lock:
            self.outbox.extend(events)
            overflow = len(self.outbox) - self.max_buffered
            if overflow > 0:
                for _ in range(overflow):
                    self.outbox.popleft()
                if self.dropped == 0:
                    log.error("store at %s unavailable and %d events buffered: dropping the oldest from now on",
                              self.where, self.max_buffered)
                self.dropped += overflow

    def publish(self, events: list[IdentityEvent]) -> int:
        """Queue `events` and publish what the store takes now (the caller's thread makes the calls)."""
        self.enqueue(events)
        return self.flush()

    def flush(self, chunk: int = 500) -> int:
        """Publish queued events in order, `chunk` per round trip; returns how many were published."""
        published = 0
        while self.outbox and self.ready():
            with self._lock:
                batch = [self.outbox[i] for i in range(min(chunk, len(self.outbox)))]
            try:
                self.call(self.store.publish, batch)
            except StoreUnavailable:
                break
            with self._lock:
                for ev in batch:  # still first unless the run took the outbox meanwhile (it ended)
                    if self.outbox and self.outbox[0] is ev:
                        self.outbox.popleft()
            published += len(batch)
            self.published += len(batch)
            if self.on_published is not None:
                self.on_published(batch, time.time())
        return published

    def take_outbox(self) -> list[IdentityEvent]:
        with self._lock:
            events = list(self.outbox)
            self.outbox.clear()
        return events

    # -- state changes ---------------------------------------------------------------------------------
    def _went_down(self, exc: BaseException) -> None:
        now = self._clock()
        if self._up:
            self._up, self._down_since, self._delay = False, now, self._initial
            self.outages += 1
            log.error("store at %s unavailable (%s: %s): cameras keep running; events are buffered and identity "
                      "decisions wait until it answers again", self.where, type(exc).__name__, exc)
        self._next_try = now + self._delay
        self._delay = min(self._delay * 2, self._max)

    def _came_back(self) -> None:
        if not self._up:
            log.warning("store at %s answers again after %.1f s; publishing %d buffered events",
                        self.where, self._clock() - (self._down_since or self._clock()), len(self.outbox))
            self._up, self._delay, self._down_since = True, self._initial, None
