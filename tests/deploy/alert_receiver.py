"""A tiny Alertmanager webhook receiver for the compose test (stdlib only).

POST any path: the JSON body is kept in memory. GET /alerts: every body received so far,
as a JSON list. Runs inside the stack (app image), published on a loopback port.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_received: list[object] = []
_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, 1 << 20))
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {"unparsed": body.decode("utf-8", "replace")}
        with _lock:
            _received.append(doc)
        self.send_response(200)
        self.end_headers()

    def do_GET(self) -> None:
        with _lock:
            body = json.dumps(_received).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write("alert-receiver: " + format % args + "\n")


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
