"""Optional MQTT sink against a private Mosquitto broker (Debian's mosquitto; `make install-test` installs it)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline.events import IdentityEvent
from pipeline.redis_server import free_port
from pipeline.store import IdentityStore

PROJECT = Path(__file__).resolve().parent.parent
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


@pytest.fixture
def broker(tmp_path):
    if MOSQUITTO is None:
        pytest.fail("mosquitto is not installed (apt-get install mosquitto; `make install-test` does it as root)",
                    pytrace=False)
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import socket

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"mosquitto exited: {proc.stderr.read().decode(errors='replace')}")
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(timeout=10)
    proc.stderr.close()


def test_events_reach_mqtt_and_are_acknowledged(broker, redis_server):
    import paho.mqtt.client as mqtt

    got, subscribed = [], threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_connect = lambda c, *_: c.subscribe("ccreid/#", qos=1)
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.on_message = lambda c, u, msg: got.append((msg.topic, json.loads(msg.payload)))
    sub.connect("127.0.0.1", broker)
    sub.loop_start()
    assert subscribed.wait(10)
    store = IdentityStore(redis_server.client(), stream="ev")
    store.publish([IdentityEvent("identity.created", "cam1", 1, "cam1:r:1", 1, None, [0, 0, 1, 1], 3, 1),
                   IdentityEvent("identity.outfit_changed", "cam2", 4, "cam2:r:4", 1, 0.71, [0, 0, 1, 1], 9, 2, True)])
    res = subprocess.run([sys.executable, "-m", "pipeline", "events", "--store", redis_server.url, "--stream", "ev",
                          "--group", "mqtt", "--consumer", "bridge", "--from-start",
                          "--mqtt", f"mqtt://127.0.0.1:{broker}", "--mqtt-topic", "ccreid"],
                         cwd=PROJECT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    deadline = time.monotonic() + 10
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    sub.loop_stop()
    assert [(t, e["identity_id"], e["outfit_id"]) for t, e in got] == [
        ("ccreid/identity.created", 1, 1), ("ccreid/identity.outfit_changed", 1, 2)]
    assert redis_server.client().xpending("ev", "mqtt")["pending"] == 0
