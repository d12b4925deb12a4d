"""inventory: a service in the remote environment. GET /stock/ITEM."""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        item = self.path.rsplit("/", 1)[-1]
        body = json.dumps({"item": item, "in_stock": 42, "where": "remote"}).encode()
        self.send_response(200 if self.path.startswith("/stock/") else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        print("inventory:", fmt % args, flush=True)


ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()
