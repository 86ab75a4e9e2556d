"""Optional MQTT sink: identity events from the Redis Stream to an MQTT broker (e.g. Mosquitto).

    python -m pipeline events --store redis://… --group mqtt --consumer bridge-1 \
        --mqtt mqtt://[user:password@]broker:1883 [--mqtt-topic pipeline] --follow

Each event is published as its JSON to `<topic>/<type>` (e.g. `pipeline/identity.outfit_changed`) with
QoS 1, and acknowledged in the consumer group only once the broker has confirmed it, so a bridge that dies
loses nothing: the next bridge of the group re-delivers what was left pending (at least once).
`mqtts://` uses TLS with the system's certificate authorities. Needs `pip install paho-mqtt`.
"""

from __future__ import annotations

import json
import ssl
import uuid
from urllib.parse import unquote, urlsplit

from pipeline.config import ConfigError
from pipeline.consumer import EventConsumer
from pipeline.redact import redact


class MqttSink:
    def __init__(self, url: str, topic: str = "pipeline", qos: int = 1, timeout_s: float = 10.0) -> None:
        try:
            import paho.mqtt.client as mqtt
        except ImportError as exc:
            raise RuntimeError("the MQTT sink needs paho-mqtt: pip install 'paho-mqtt>=2'") from exc
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (raises for a port out of range)
        except ValueError as exc:
            raise ConfigError("<command line>", "--mqtt", f"{redact(url)}: {exc}") from None
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConfigError("<command line>", "--mqtt",
                              f"an MQTT URL looks like mqtt://host:1883 or mqtts://host:8883, got {redact(url)!r}")
        self.topic = topic.rstrip("/")
        self.qos = qos
        self.timeout_s = timeout_s
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"ccreid-{uuid.uuid4().hex[:8]}")
        if parts.username:
            self.client.username_pw_set(unquote(parts.username), unquote(parts.password or ""))
        if parts.scheme == "mqtts":
            self.client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        try:
            self.client.connect(parts.hostname, port, keepalive=30)
        except OSError as exc:
            raise ConnectionError(f"cannot reach the MQTT broker at {parts.hostname}:{port}: {exc}") from exc
        self.client.loop_start()  # the network loop runs in paho's thread

    def publish(self, event: dict) -> None:
        """Publish one event and wait until the broker confirms it (QoS 1) or raise."""
        info = self.client.publish(f"{self.topic}/{event['type']}", json.dumps(event), qos=self.qos)
        info.wait_for_publish(timeout=self.timeout_s)
        if not info.is_published():
            raise ConnectionError(f"the MQTT broker did not confirm event {event.get('event_id')} "
                                  f"within {self.timeout_s}s (rc {info.rc})")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def bridge(consumer: EventConsumer, sink: MqttSink, follow: bool = False) -> int:
    """Forward the group's events to MQTT, acknowledging each once the broker has it. Returns the count."""
    n = 0
    for d in consumer.deliveries(follow=follow):
        sink.publish(d.event)
        consumer.ack(d.stream_id)
        n += 1
    return n
