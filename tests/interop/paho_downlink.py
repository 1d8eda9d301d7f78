"""A Link SDK-like device on paho-mqtt for cloud-to-device tests: subscribes, then prints one JSON
line per event on stdout (flushed), until stdin closes or TIMEOUT seconds pass.

Env: HOST PORT CLIENT_ID USERNAME PASSWORD PK DN
  SUBSCRIBE  filters with their QoS, "filter:qos;filter:qos"
  PROTOCOL   311 (default) or 5
  MANUAL_ACK 1: acknowledge a QoS 1 message only when it comes again with DUP
  ANSWER     1: answer RRPC requests ("pong:" + request) and thing-model calls (Alink reply)
  TIMEOUT    seconds (default 30)
Events: {"event":"subscribed","granted":[...]}, {"event":"message","topic","payload","qos","dup"},
{"event":"disconnected","rc"}.
"""

import json
import os
import sys
import threading

import paho.mqtt.client as mqtt

env = os.environ
pk, dn = env["PK"], env["DN"]
manual = env.get("MANUAL_ACK") == "1"
answer = env.get("ANSWER") == "1"
lock = threading.Lock()


def emit(obj):
    with lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def on_subscribe(client, userdata, mid, reason_codes, properties):
    emit({"event": "subscribed", "granted": [rc.value for rc in reason_codes]})


def on_message(client, userdata, msg):
    payload = msg.payload.decode("utf-8", "replace")
    emit({"event": "message", "topic": msg.topic, "payload": payload, "qos": msg.qos, "dup": bool(msg.dup)})
    if manual and msg.qos == 1:
        if msg.dup:
            client.ack(msg.mid, msg.qos)
    elif manual:
        pass
    if not answer:
        return
    rrpc = f"/sys/{pk}/{dn}/rrpc/request/"
    service = f"/sys/{pk}/{dn}/thing/service/"
    if msg.topic.startswith(rrpc):
        client.publish(msg.topic.replace("/request/", "/response/", 1), "pong:" + payload, qos=0)
    elif msg.topic.startswith(service):
        request = json.loads(payload)
        reply = {"id": request["id"], "code": 200, "data": {"echo": request.get("params", {})}}
        client.publish(msg.topic + "_reply", json.dumps(reply), qos=1)


def on_disconnect(client, userdata, flags, reason_code, properties):
    emit({"event": "disconnected", "rc": str(reason_code)})


protocol = mqtt.MQTTv5 if env.get("PROTOCOL") == "5" else mqtt.MQTTv311
client = mqtt.Client(
    mqtt.CallbackAPIVersion.VERSION2, client_id=env["CLIENT_ID"], protocol=protocol, manual_ack=manual
)
client.username_pw_set(env["USERNAME"], env["PASSWORD"])
client.on_subscribe = on_subscribe
client.on_message = on_message
client.on_disconnect = on_disconnect
client.connect(env["HOST"], int(env["PORT"]), keepalive=30)
subscriptions = []
for item in env.get("SUBSCRIBE", "").split(";"):
    if item:
        topic, qos = item.rsplit(":", 1)
        subscriptions.append((topic, int(qos)))
if subscriptions:
    client.subscribe(subscriptions)
client.loop_start()
# Runs until the test closes stdin (or the timeout), so the test decides when the device leaves.
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
done.wait(float(env.get("TIMEOUT", "30")))
client.disconnect()
client.loop_stop()
