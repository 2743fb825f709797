"""A webhook receiver for the integration tests: a real HTTP server on 127.0.0.1, in the test's process, that
records every request and answers as the test says: `ok` (204), `fail` (500), `hold` (204, but only once
`release()` is called: a slow receiver holding its senders), or `down` (its socket closed, so connections are
refused; `up()` opens it again on the same port)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.harness import free_port


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    answered: int
    path: str = "/hook"

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]

    def signed_by(self, secret: str) -> bool:
        """Whether `Parley-Signature` is the HMAC of "<t>.<body>" with `secret`."""
        fields = dict(part.split("=", 1) for part in self.headers.get("parley-signature", "").split(","))
        expected = hmac.new(secret.encode(), f"{fields.get('t')}.".encode() + self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, fields.get("v1", ""))


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.mode = "ok"
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._released = threading.Event()
        self.held = 0
        """Requests being held now (mode `hold`)."""
        self.up()

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver.mode == "hold":
                    with receiver._lock:
                        receiver.held += 1
                    receiver._released.wait(timeout=120)
                    with receiver._lock:
                        receiver.held -= 1
                status = 204 if receiver.mode in ("ok", "hold") else 500
                with receiver._lock:
                    receiver.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body, status,
                                                      self.path))  # fmt: skip
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.mode = "ok" if self.mode == "down" else self.mode

    def release(self) -> None:
        """Answer the held requests, and every later one at once."""
        self._released.set()

    def down(self) -> None:
        """Close the socket: connections are refused until `up()`."""
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.mode = "down"

    def delivered(self) -> list[Received]:
        """The requests it answered with 2xx, in arrival order."""
        with self._lock:
            return [one for one in self.received if one.answered < 300]

    def all(self) -> list[Received]:
        with self._lock:
            return list(self.received)
