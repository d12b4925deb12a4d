//! The programs the restart part runs: the service, the worker and the drain client.

/// Answers every GET with "pid N" (so a client tells the new process from the old one).
pub(super) const SERVER_PY: &str = r#"import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY = b"pid %d\n" % os.getpid()
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self):
        self.wfile.write(ANSWER)

    def log_message(self, *args):
        pass


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

/// Prints one line and sleeps (listens nowhere); exits after the line with WORKER_ONCE.
pub(super) const WORKER_PY: &str = r#"import os, sys, time
print("worker up", os.getpid(), flush=True)
if os.environ.get("WORKER_ONCE"):
    sys.exit(0)
while True:
    time.sleep(3600)
"#;

/// One kept-alive GET, then the connection stays open until the server closes it or HOLD
/// seconds pass; writes READY once the answer is in.
pub(super) const HOLD_PY: &str = r#"import socket, sys
host, port, hold, ready = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
s = socket.create_connection((host, port))
s.sendall(b"GET / HTTP/1.1\r\nHost: held\r\n\r\n")
s.recv(4096)
open(ready, "w").write("held\n")
s.settimeout(hold)
try:
    while s.recv(4096):
        pass
    print("closed by the server")
except socket.timeout:
    print("closed by the client after", hold, "s")
s.close()
"#;
