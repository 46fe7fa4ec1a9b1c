from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
import pytest

from tests.support.mosquitto import CONTROLLER_PASSWORD, CONTROLLER_USER

pytestmark = pytest.mark.broker


def _client(broker, user, password):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{user}")
    client.username_pw_set(user, password)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    return client


def test_acl_keeps_a_device_to_its_own_topics(mosquitto):
    mosquitto.add_users({"dev-a": "pa", "dev-b": "pb"})
    got: list[str] = []
    done = threading.Event()
    ctl = _client(mosquitto, CONTROLLER_USER, CONTROLLER_PASSWORD)

    def on_message(_c, _u, msg):
        got.append(msg.topic)
        if msg.topic.endswith("dev-a/ack"):
            done.set()

    ctl.on_message = on_message
    ctl.subscribe("illuminate/v1/devices/+/ack", qos=1)
    dev = _client(mosquitto, "dev-a", "pa")
    import time

    time.sleep(0.3)
    dev.publish("illuminate/v1/devices/dev-b/ack", b"{}", qos=1).wait_for_publish(5)
    dev.publish("illuminate/v1/devices/dev-a/ack", b"{}", qos=1).wait_for_publish(5)
    assert done.wait(5)
    assert got == ["illuminate/v1/devices/dev-a/ack"]
    for c in (dev, ctl):
        c.loop_stop()
        c.disconnect()
