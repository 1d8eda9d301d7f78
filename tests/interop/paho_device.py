"""A Link SDK-like device on paho-mqtt: subscribes to its post_reply topic, posts properties
(with and without "sys":{"ack":0}, and one malformed body) and prints every reply it gets, one
JSON object a line, until the reply to the last post arrives (or 10 s pass)."""

import json
import os
import sys
import threading

import paho.mqtt.client as mqtt

pk, dn = os.environ["PK"], os.environ["DN"]
post = f"/sys/{pk}/{dn}/thing/event/property/post"
subscribed, done = threading.Event(), threading.Event()
replies = []


def on_subscribe(client, userdata, mid, reason_codes, properties):
    subscribed.set()


def on_message(client, userdata, msg):
    body = json.loads(msg.payload)
    replies.append({"topic": msg.topic, "body": body})
    if body.get("id") == "4":
        done.set()


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=os.environ["CLIENT_ID"], protocol=mqtt.MQTTv311)
client.username_pw_set(os.environ["USERNAME"], os.environ["PASSWORD"])
client.on_subscribe = on_subscribe
client.on_message = on_message
client.connect(os.environ["HOST"], int(os.environ["PORT"]), keepalive=30)
client.loop_start()
client.subscribe(post + "_reply", qos=0)
if not subscribed.wait(10):
    sys.exit("no SUBACK")
for body in [
    {"id": "1", "version": "1.0", "params": {"t": 1}, "method": "thing.event.property.post"},
    {"id": "2", "version": "1.0", "sys": {"ack": 0}, "params": {"t": 2}, "method": "thing.event.property.post"},
    {"id": "3", "version": "1.0", "method": "thing.event.property.post"},
    {"id": "4", "version": "1.0", "sys": {"ack": 1}, "params": {"t": 4}, "method": "thing.event.property.post"},
]:
    client.publish(post, json.dumps(body), qos=1).wait_for_publish(10)
done.wait(10)
client.loop_stop()
client.disconnect()
for r in replies:
    print(json.dumps(r))
