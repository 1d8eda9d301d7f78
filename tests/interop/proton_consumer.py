"""A consumer written the way the modelled platform's Python sample is (python-qpid-proton,
MessagingHandler, manual accept), signing its own login.

Env: HOST PORT ACCESS_KEY_ID ACCESS_KEY_SECRET GROUP COUNT TOPIC_SUFFIX [RELEASE_SECONDS]
Prints one JSON line per data message; exits 0 after COUNT of them, 1 on error or timeout.
With RELEASE_SECONDS it releases every data message instead, prints one line per delivery,
and exits 0 after that many seconds.
"""
import base64
import hashlib
import hmac
import json
import os
import sys
import time

from proton.handlers import MessagingHandler
from proton.reactor import Container

env = os.environ
timestamp = str(int(time.time() * 1000))
client_id = "proton-%d" % os.getpid()
username = (
    client_id + "|authMode=aksign,signMethod=hmacsha256,timestamp=" + timestamp
    + ",authId=" + env["ACCESS_KEY_ID"] + ",iotInstanceId=,consumerGroupId=" + env["GROUP"] + "|"
)
signature = hmac.new(
    env["ACCESS_KEY_SECRET"].encode(),
    ("authId=" + env["ACCESS_KEY_ID"] + "&timestamp=" + timestamp).encode(),
    hashlib.sha256,
).digest()
password = base64.b64encode(signature).decode()


class Consumer(MessagingHandler):
    def __init__(self):
        super().__init__(auto_accept=False)
        self.want = int(env["COUNT"])
        self.got = 0
        self.failed = None
        self.release_for = float(env.get("RELEASE_SECONDS", "0"))

    def on_start(self, event):
        url = "amqp://%s:%s" % (env["HOST"], env["PORT"])
        conn = event.container.connect(
            url, user=username, password=password, allowed_mechs="PLAIN",
            sasl_enabled=True, allow_insecure_mechs=True, reconnect=False,
        )
        event.container.create_receiver(conn)
        event.container.schedule(self.release_for or 30, self)

    def on_timer_task(self, event):
        if not self.release_for:
            self.failed = "timeout after %d messages" % self.got
        event.container.stop()

    def on_message(self, event):
        msg = event.message
        props = msg.properties or {}
        data = props.get("topic", "").endswith(env["TOPIC_SUFFIX"])
        if self.release_for and data:
            self.release(event.delivery, delivered=False)
        else:
            self.accept(event.delivery)
        if not data:
            return
        body = msg.body
        if isinstance(body, memoryview):
            body = body.tobytes()
        line = {
            "messageId": props.get("messageId"),
            "amqpMessageId": msg.id,
            "topic": props.get("topic"),
            "generateTime": props.get("generateTime"),
            "body": body.decode(),
        }
        if "tag" in props:
            line["tag"] = props["tag"]
        print(json.dumps(line), flush=True)
        self.got += 1
        if self.got == self.want and not self.release_for:
            event.connection.close()
            event.container.stop()

    def on_transport_error(self, event):
        self.failed = "transport error: %s" % event.transport.condition
        event.container.stop()

    def on_connection_error(self, event):
        self.failed = "connection error: %s" % event.connection.remote_condition
        event.container.stop()


handler = Consumer()
Container(handler).run()
if handler.failed or (handler.got != handler.want and not handler.release_for):
    print(handler.failed or "got %d of %d" % (handler.got, handler.want), file=sys.stderr)
    sys.exit(1)
