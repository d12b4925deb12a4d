"""checkout: the service being developed on the laptop.

GET /checkout calls orders and inventory by plain name (from its config, below) and asks
orders to confirm through a webhook to checkout's own callback URL.
POST /webhook records a confirmation; GET /webhooks lists them.
"""
import json
import os
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The config uses names, not addresses: it is the same wherever orders and inventory run.
ORDERS = os.environ.get("ORDERS_URL", "http://orders:8080")
INVENTORY = os.environ.get("INVENTORY_URL", "http://inventory:8080")
VERSION = os.environ.get("VERSION", "v1")
CALLBACK = os.environ.get("OVERLAY_CALLBACK_URL", "")
received = []
lock = threading.Lock()


def get_json(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


class Handler(BaseHTTPRequestHandler):
    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/healthz":
            return self.reply(200, {"ok": True})
        if self.path == "/webhooks":
            with lock:
                return self.reply(200, {"received": list(received)})
        if self.path.startswith("/checkout"):
            try:
                stock = get_json(INVENTORY + "/stock/widget")
                hook = urllib.parse.quote(CALLBACK + "/webhook", safe="") if CALLBACK else ""
                order = get_json(ORDERS + "/orders/new?item=widget&callback=" + hook)
            except Exception as e:  # the demo prints what went wrong
                return self.reply(502, {"error": str(e)})
            return self.reply(200, {
                "checkout": VERSION,
                "served_by": os.environ.get("OVERLAY_HOSTNAME", "checkout"),
                "inventory": stock,
                "order": order,
            })
        self.reply(404, {"error": "not found"})

    def do_POST(self):
        if self.path == "/webhook":
            n = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(n) or b"{}")
            with lock:
                received.append(body)
                del received[:-50]
            print(f"webhook from orders: order {body.get('order')} {body.get('status')}", flush=True)
            return self.reply(200, {"ok": True})
        self.reply(404, {"error": "not found"})

    def log_message(self, fmt, *args):
        print(f"{self.command} {self.path} -> {args[1] if len(args) > 1 else ''}", flush=True)


import urllib.parse  # noqa: E402

print(f"checkout {VERSION} listening on 127.0.0.1:{os.environ['PORT']}, callback {CALLBACK or '(none)'}", flush=True)
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
