"""A long-running consumer for the three-node kill test, written the way the modelled
platform's Python sample is (python-qpid-proton, MessagingHandler, manual accept).

Env: HOST PORT ACCESS_KEY_ID ACCESS_KEY_SECRET GROUP
Accepts every message and prints one line per delivery: "<unix ms> <messageId> <body>",
flushed at once. Reconnects (with a freshly signed login) whenever the connection goes, and
runs until stdin closes.
"""
import base64
import hashlib
import hmac
import os
import sys
import threading
import time

from proton.handlers import MessagingHandler
from proton.reactor import Container

env = os.environ
client_id = "proton-kill-%d" % os.getpid()


def login():
    timestamp = str(int(time.time() * 1000))
    username = (
        client_id + "|authMode=aksign,signMethod=hmacsha256,timestamp=" + timestamp
        + ",authId=" + env["ACCESS_KEY_ID"] + ",iotInstanceId=,consumerGroupId=" + env["GROUP"] + "|"
    )
    signature = hmac.new(
        env["ACCESS_KEY_SECRET"].encode(),
        ("authId=" + env["ACCESS_KEY_ID"] + "&timestamp=" + timestamp).encode(),
        hashlib.sha256,
    ).digest()
    return username, base64.b64encode(signature).decode()


class Consumer(MessagingHandler):
    def __init__(self):
        super().__init__(auto_accept=False, prefetch=64)
        self.stopped = False

    def on_start(self, event):
        self.container = event.container
        self.connect()

    def connect(self):
        user, password = login()
        conn = self.container.connect(
            "amqp://%s:%s" % (env["HOST"], env["PORT"]), user=user, password=password,
            allowed_mechs="PLAIN", sasl_enabled=True, allow_insecure_mechs=True, reconnect=False,
            heartbeat=10,
        )
        self.container.create_receiver(conn)

    def on_message(self, event):
        msg = event.message
        props = msg.properties or {}
        body = msg.body
        if isinstance(body, (bytes, memoryview)):
            body = bytes(body).decode("utf-8", "replace")
        sys.stdout.write("%d %s %s\n" % (int(time.time() * 1000), props.get("messageId"), body))
        sys.stdout.flush()
        self.accept(event.delivery)

    def retry(self, event):
        if self.stopped:
            return
        sys.stderr.write("proton: connection lost, reconnecting\n")
        sys.stderr.flush()
        self.container.schedule(0.5, self)

    def on_timer_task(self, event):
        if not self.stopped:
            self.connect()

    def on_transport_error(self, event):
        self.retry(event)

    def on_connection_remote_close(self, event):
        self.retry(event)

    def on_disconnected(self, event):
        pass


handler = Consumer()
container = Container(handler)


def watch_stdin():
    sys.stdin.read()
    handler.stopped = True
    os._exit(0)


threading.Thread(target=watch_stdin, daemon=True).start()
container.run()
