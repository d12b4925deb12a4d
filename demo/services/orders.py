"""orders: a service in the remote environment (not on the overlay itself).

GET /orders/new?item=X&callback=URL creates an order and, when a callback URL is given,
confirms it with a POST to that URL a moment later (a webhook into the laptop).
"""
import itertools
import json
import sys
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

counter = itertools.count(1001)


def confirm(url, order):
    time.sleep(0.2)
    data = json.dumps({"order": order, "status": "confirmed"}).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            print(f"webhook {url} -> {r.status}", flush=True)
    except Exception as e:
        print(f"webhook {url} failed: {e}", flush=True)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        u = urllib.parse.urlparse(self.path)
        q = urllib.parse.parse_qs(u.query)
        if u.path == "/orders/new":
            order = next(counter)
            cb = q.get("callback", [""])[0]
            if cb:
                threading.Thread(target=confirm, args=(cb, order), daemon=True).start()
            body = json.dumps({"order": order, "item": q.get("item", ["?"])[0], "where": "remote",
                               "webhook": cb or None}).encode()
            self.send_response(200)
        else:
            body = b'{"error": "not found"}'
            self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        print("orders:", fmt % args, flush=True)


ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()
