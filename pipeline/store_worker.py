"""The store worker: the one thread of a run that talks to the identity store.

The frame loop hands it work and never waits for it: events to publish (`publish`), a request to run the
match stage's decisions (`request_step`), and, through the match stage's `ending` backlog, tracklets to
decide at their end (`wake`). The worker does that work in order, through a `StoreLink` that turns every
store error into an outage (retry with backoff, events buffered and bounded) or a failure (retrying cannot
fix it: `failure` is set and the run stops loud). Queues are bounded: the link's outbox by `events.maxlen`,
the ending backlog by the match stage's `max_ending`, and step requests coalesce into one.

It also watches the store's generation: a store that comes back empty is announced with a `store.reset`
event, the matcher reloads, and identity ids go on above the highest one seen (`pipeline/store.py`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from pipeline.events import IdentityEvent
from pipeline.identity_stage import MatchStage
from pipeline.outage import StoreFailure, StoreLink, StoreUnavailable
from pipeline.store import StoreReset

log = logging.getLogger("pipeline.store")
GENERATION_CHECK_S = 1.0  # how often an idle worker checks that the store still is the one it knew


@dataclass(frozen=True)
class Undelivered:
    """What a run could not deliver: events still waiting and how many were dropped beyond the buffer."""

    events: list[IdentityEvent]
    dropped: int


class StoreWorker(threading.Thread):
    def __init__(self, link: StoreLink, stage: MatchStage) -> None:
        super().__init__(name="store-worker", daemon=True)
        self.link = link
        self.stage = stage
        self.failure: BaseException | None = None  # a store error retrying cannot fix; the run stops on it
        self.resets = 0
        self._cond = threading.Condition()
        self._step_requested = False
        self._stopping = False
        self._idle = True  # no work in hand (read by `drain`)
        self._generation_checked = time.monotonic()

    # -- frame loop side (never waits on the network) ----------------------------------------------------
    def publish(self, events: list[IdentityEvent]) -> None:
        if events:
            self.link.enqueue(events)
            self.wake()

    def request_step(self) -> None:
        with self._cond:
            self._step_requested = True
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def check(self) -> None:
        """Raise StoreFailure in the caller's thread if the worker stopped on an error it could not retry."""
        if self.failure is not None:
            raise StoreFailure(str(self.failure)) from self.failure

    # -- the worker thread -------------------------------------------------------------------------------
    def _has_work(self) -> bool:
        return self._step_requested or bool(self.stage.ending) or bool(self.link.outbox)

    def run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not (self._has_work() and self.link.ready()):
                    wait = self.link.retry_in() if self._has_work() else GENERATION_CHECK_S
                    self._cond.wait(max(0.01, min(wait, GENERATION_CHECK_S)))
                    if not self._has_work() and time.monotonic() - self._generation_checked >= GENERATION_CHECK_S:
                        break  # idle: still look at the store's generation now and then
                if self._stopping:
                    return
                step, self._step_requested = self._step_requested, False
                self._idle = False
            try:
                self._work(step)
            except StoreUnavailable:
                if step:
                    self._step_requested = True  # decide again once the store is back
            except BaseException as exc:  # a failure retrying cannot fix: stop, and let the run fail loud
                self.failure = exc
                log.error("store worker stopped: %s", exc, exc_info=not isinstance(exc, StoreFailure))
                return
            finally:
                with self._cond:
                    self._idle = True
                    self._cond.notify_all()

    def _work(self, step: bool) -> None:
        if time.monotonic() - self._generation_checked >= GENERATION_CHECK_S:
            self._with_reset(lambda out: self.link.call(self.stage.matcher.store.check_generation))
            self._generation_checked = time.monotonic()
        while self._with_reset(lambda out: self.link.call(self.stage.end_next, out)):
            self.link.flush()
        if step:
            self._with_reset(lambda out: self.link.call(self.stage.step, None, out))
        self.link.flush()

    def _with_reset(self, fn):
        """Run fn(events) and queue the events it made, also when it fails half-way; a store that turned
        out to be a new generation is announced and adopted, then fn runs again."""
        for _ in range(3):
            events: list[IdentityEvent] = []
            try:
                return fn(events)
            except StoreReset as exc:
                self._announce_reset(exc)
            finally:
                self.link.enqueue(events)
        raise StoreFailure("the store kept changing generation under this worker (3 resets in a row)")

    def _announce_reset(self, exc: StoreReset) -> None:
        matcher = self.stage.matcher
        before = matcher.store.highest_identity
        self.link.call(matcher.on_store_reset)
        self.resets += 1
        log.error("the store at %s came back without this run's data (%s): identities seen before are unknown "
                  "to it; new identity ids go on after %d", self.link.where, exc, before)
        self.link.enqueue([IdentityEvent(
            "store.reset", detail=f"the store came back without its data (generation {exc.known} -> "
                                  f"{matcher.store.generation}); identities before this event are unknown to it; "
                                  f"new identity ids start after {before}")])

    # -- the end of a run ---------------------------------------------------------------------------------
    def drain(self, timeout_s: float) -> Undelivered:
        """Wait up to `timeout_s` for the backlog and the outbox to be delivered, stop the worker, and
        return what is left (the caller writes it to a file: nothing is dropped silently)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._cond.notify_all()
            while self.is_alive() and (self._has_work() or not self._idle) and time.monotonic() < deadline:
                self._cond.wait(0.1)
        self.stop()
        pending = self.stage.abandon_ending("store unavailable: not decided")
        return Undelivered(self.link.take_outbox() + pending, self.link.dropped)

    def stop(self, timeout_s: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout_s)
