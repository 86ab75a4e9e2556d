"""Reading identity events as a consumer group: each event goes to one consumer of the group, is
acknowledged once handled, and is re-delivered to another consumer if its first consumer died first.

    import redis
    from pipeline.consumer import EventConsumer

    consumer = EventConsumer(redis.Redis.from_url("redis://localhost:6379/0"), group="billing", consumer="b1")
    for delivery in consumer.deliveries(follow=True):
        handle(delivery.event)             # a dict, schema 1 (see README "Identity events")
        consumer.ack(delivery.stream_id)   # unacknowledged events stay pending

Delivery order on each read: this consumer's own pending events first (a restart under the same name
resumes them), then events another consumer left pending for `claim_idle_ms` (XAUTOCLAIM: that consumer
is presumed dead), then new events. Delivery is at least once: a consumer that handled an event but died
before acknowledging it gets it again, so handlers should be idempotent (`event_id` is unique).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Iterator

import redis


@dataclass(frozen=True)
class Delivery:
    stream_id: str
    event: dict
    redelivered: bool  # True when it was pending (this consumer before a restart, or claimed from another)


class EventConsumer:
    def __init__(self, client: redis.Redis, stream: str = "pipeline:events", group: str = "default",
                 consumer: str = "consumer-1", start: str = "0", claim_idle_ms: int = 30_000) -> None:
        """`start`: where a new group begins ("0" = the oldest event kept, "$" = only new events)."""
        if not group or not consumer:
            raise ValueError("a consumer group and a consumer name are both required")
        self.r = client
        self.stream, self.group, self.consumer = stream, group, consumer
        self.claim_idle_ms = claim_idle_ms
        self._own_pending_done = False
        self._claim_cursor = "0-0"
        self._create_group(start)

    def _create_group(self, start: str) -> None:
        try:
            self.r.xgroup_create(self.stream, self.group, id=start, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise  # only "this group exists already" is expected here

    def _decode(self, entries, redelivered: bool) -> list[Delivery]:
        out = []
        for sid, fields in entries:
            if fields is None or b"json" not in fields:
                # trimmed from the stream (MAXLEN) while pending: nothing to deliver, just settle it
                self.ack(sid.decode())
                continue
            out.append(Delivery(sid.decode(), json.loads(fields[b"json"]), redelivered))
        return out

    def read(self, count: int = 100, block_ms: int | None = None) -> list[Delivery]:
        """The next events for this consumer (see the module docstring for the order). A group that
        vanished with its stream (the store came back empty: a `store.reset` follows) is created again,
        from the first event of the new stream."""
        try:
            return self._read(count, block_ms)
        except redis.ResponseError as exc:
            if not str(exc).startswith("NOGROUP"):
                raise
            self._create_group("0")
            self._own_pending_done, self._claim_cursor = False, "0-0"
            return self._read(count, block_ms)

    def _read(self, count: int, block_ms: int | None) -> list[Delivery]:
        if not self._own_pending_done:
            res = self.r.xreadgroup(self.group, self.consumer, {self.stream: "0"}, count=count)
            entries = res[0][1] if res else []
            if entries:
                return self._decode(entries, True)
            self._own_pending_done = True
        res = self.r.xautoclaim(self.stream, self.group, self.consumer, self.claim_idle_ms,
                                start_id=self._claim_cursor, count=count)
        self._claim_cursor = res[0].decode() if isinstance(res[0], bytes) else str(res[0])
        claimed = self._decode(res[1], True)
        if claimed:
            return claimed
        res = self.r.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms)
        return self._decode(res[0][1], False) if res else []

    def ack(self, *stream_ids: str) -> int:
        return int(self.r.xack(self.stream, self.group, *stream_ids)) if stream_ids else 0

    def pending(self) -> int:
        """How many events of the group are delivered but not acknowledged (all consumers)."""
        return int(self.r.xpending(self.stream, self.group)["pending"])

    def deliveries(self, follow: bool = False, block_ms: int = 1000, idle_exit_s: float | None = None
                   ) -> Iterator[Delivery]:
        """Events one by one; without `follow`, stops when nothing is left to deliver now."""
        idle_since = time.monotonic()
        while True:
            batch = self.read(block_ms=block_ms if follow else None)
            if batch:
                idle_since = time.monotonic()
                yield from batch
                continue
            if not follow or (idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s):
                return
