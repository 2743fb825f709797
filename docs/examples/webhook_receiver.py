"""A Parley webhook receiver, Python standard library only: it checks each delivery's signature, then handles
each event once (a delivery that is retried comes again with the same Parley-Delivery-Id).

    PARLEY_WEBHOOK_SECRET=whsec_... python webhook_receiver.py 8000

Register it with `POST /api/v1/webhooks {"url": "https://<this host>/"}` (the answer's `secret` is the one to give
it). It answers 204 to a delivery it accepted, 401 to one whose signature does not hold: Parley retries anything
but a 2xx, so answer quickly and do slow work elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ["PARLEY_WEBHOOK_SECRET"]
TOLERANCE_S = 300
"""A signature older (or newer) than this is refused: a captured delivery cannot be replayed later."""
MAX_BODY_BYTES = 10_000_000
seen: set[str] = set()
"""Delivery ids handled already (keep them in your database in a real receiver)."""


def verify(header: str, body: bytes, secret: str, now: float | None = None) -> bool:
    """Whether `Parley-Signature: t=<unix seconds>,v1=<hex>` signs `body` with `secret`, recently enough."""
    fields = dict(part.strip().split("=", 1) for part in header.split(",") if "=" in part)
    stamp, given = fields.get("t", ""), fields.get("v1", "")
    if not stamp.isdigit() or not given:
        return False
    if abs((time.time() if now is None else now) - int(stamp)) > TOLERANCE_S:
        return False
    expected = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given)  # constant time: no timing hint about the right digest


def handle(delivery: str, event: dict) -> None:
    """Your work goes here; this example prints one line per event."""
    job = event["job"]
    print(json.dumps({"delivery": delivery, "type": event["type"], "job_id": job["job_id"],
                      "status": job["status"]}), flush=True)  # fmt: skip


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            return self._answer(413)
        body = self.rfile.read(length)
        if not verify(self.headers.get("Parley-Signature", ""), body, SECRET):
            return self._answer(401)
        delivery = self.headers.get("Parley-Delivery-Id", "")
        if delivery not in seen:
            handle(delivery, json.loads(body))
            seen.add(delivery)
        self._answer(204)

    def _answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's name)
        pass  # one line per event is printed by handle()


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    server = ThreadingHTTPServer(("127.0.0.1", port), Receiver)
    print(f"listening on http://127.0.0.1:{port}/", flush=True)
    server.serve_forever()
