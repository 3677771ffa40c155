"""The lab's small web application: a form login and a JSON API, served behind nginx and directly on :8080.

This module owns only the application's HTTP behaviour; the lab runs it inside the web host's namespace as
`python -m packetclip_training.lab.webapp --bind IP --port 8080 --credentials FILE`. It is not a general web
server and never listens outside the address it is given.

Endpoints: `POST /login` (form or JSON fields `username`, `password`): 200 "Welcome" on the right pair, else 403
with the body "Login failed". `GET /api/items/<n>`: a JSON document whose size depends on n. `POST /api/...`:
echoes a JSON summary of the posted document. Anything else: 404.
"""

from __future__ import annotations

import argparse
import json
import logging
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # refuse larger bodies: the lab never posts more, and an attack must not fill memory


class LabAppHandler(BaseHTTPRequestHandler):
    server_version = "labapp/1.0"
    protocol_version = "HTTP/1.1"  # keep-alive, like the nginx front
    credentials: tuple[str, str] = ("", "")

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.client_address[0], *args)

    def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self) -> bytes | None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._reply(413, b'{"error":"too large"}')
            return None
        return self.rfile.read(length)

    def do_GET(self) -> None:
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) == 3 and parts[:2] == ["api", "items"] and parts[2].isdigit():
            item = int(parts[2])
            # Sizes from tens of bytes to tens of kilobytes, so API responses are not all alike.
            readings = [{"i": i, "v": (item * 7919 + i * 104729) % 1000 / 10} for i in range(item % 400)]
            self._reply(200, json.dumps({"item": item, "readings": readings}).encode())
        elif self.path.startswith("/login"):
            self._reply(
                200, b"<form method=post><input name=username><input name=password></form>", "text/html"
            )
        else:
            self._reply(404, b'{"error":"not found"}')

    def do_POST(self) -> None:
        body = self._read_body()
        if body is None:
            return
        path = self.path.split("?")[0]
        if path == "/login":
            self._login(body)
        elif path.startswith("/api/"):
            try:
                document = json.loads(body or b"{}")
            except ValueError:
                self._reply(400, b'{"error":"bad json"}')
                return
            keys = sorted(document) if isinstance(document, dict) else []
            self._reply(201, json.dumps({"stored": path, "keys": keys, "bytes": len(body)}).encode())
        else:
            self._reply(404, b'{"error":"not found"}')

    def _login(self, body: bytes) -> None:
        if "json" in (self.headers.get("Content-Type") or ""):
            try:
                fields = {k: str(v) for k, v in json.loads(body).items()}
            except (ValueError, AttributeError):
                fields = {}
        else:
            fields = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode("latin-1")).items()}
        if (fields.get("username"), fields.get("password")) == self.credentials:
            self._reply(200, b"Welcome", "text/plain")
        else:
            self._reply(403, b"Login failed", "text/plain")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--credentials", type=Path, required=True, help="file with 'user:password'")
    args = parser.parse_args(argv)
    user, _, password = args.credentials.read_text().strip().partition(":")
    LabAppHandler.credentials = (user, password)
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 256  # a dictionary attack opens many connections at once
    with ThreadingHTTPServer((args.bind, args.port), LabAppHandler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
