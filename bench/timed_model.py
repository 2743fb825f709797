"""A minimal OpenAI-compatible streaming chat server that says *when* it sent the first chunk.

Why it exists: the benchmark measures the time from the model's first content chunk to the
client's first `delta` event.  tests/model_server.py does not report when it sent a chunk, and
the benchmark must not change it, so this server (a few dozen lines, same uvicorn stack) writes
``t=<time.time() just before the send>`` as the *content* of each answer's first content chunk.
Parley passes the text through unchanged as the first `delta`, so the client subtracts that
number from its own ``time.time()`` when the delta arrives.  Both run on the same machine, so
they read the same clock (CLOCK_REALTIME); no synchronisation is involved.

It also keeps the last first-chunk send times by completion id (``GET /_control/first-chunks``)
as a cross-check, and takes ``first_chunk_delay_ms`` (pause before the first content chunk) from
the command line or ``POST /_control/options``.

    python -m bench.timed_model --port 8002 [--first-chunk-delay-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time
import uuid
from collections import deque
from typing import Any

import uvicorn

_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
_JSON_HEADERS = [(b"content-type", b"application/json")]
FIRST_CHUNK_PREFIX = "t="


class TimedModel:
    def __init__(self, first_chunk_delay_ms: float = 0.0) -> None:
        self.first_chunk_delay_s = first_chunk_delay_ms / 1000
        self.first_chunks: deque[tuple[str, float]] = deque(maxlen=10_000)
        self.requests = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if path == "/v1/chat/completions" and method == "POST":
            await self._chat(json.loads(body), send)
        elif path == "/_control/options" and method == "POST":
            options = json.loads(body or b"{}")
            if "first_chunk_delay_ms" in options:
                self.first_chunk_delay_s = float(options["first_chunk_delay_ms"]) / 1000
            await _json(send, 200, {"first_chunk_delay_ms": self.first_chunk_delay_s * 1000})
        elif path == "/_control/first-chunks":
            await _json(send, 200, {"requests": self.requests, "first_chunks": list(self.first_chunks)})
        else:
            await _json(send, 404, {"error": {"message": "not found"}})

    async def _chat(self, body: dict[str, Any], send: Any) -> None:
        self.requests += 1
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        model = body.get("model") or "timed-model"
        users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
        words = f"echo: {users[-1] if users else ''}".split(" ")
        if not body.get("stream"):
            await asyncio.sleep(self.first_chunk_delay_s)
            text = f"{FIRST_CHUNK_PREFIX}{time.time():.6f} " + " ".join(words)
            await _json(send, 200, {
                "id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
            })  # fmt: skip
            return

        def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
            chunk = {"id": completion_id, "object": "chat.completion.chunk", "created": 0, "model": model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
            return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        await send({"type": "http.response.body", "body": event({"role": "assistant", "content": ""}),
                    "more_body": True})  # fmt: skip
        if self.first_chunk_delay_s:
            await asyncio.sleep(self.first_chunk_delay_s)
        sent_at = time.time()
        await send({"type": "http.response.body", "body": event({"content": f"{FIRST_CHUNK_PREFIX}{sent_at:.6f} "}),
                    "more_body": True})  # fmt: skip
        self.first_chunks.append((completion_id, sent_at))
        for index, word in enumerate(words):
            piece = word if index == 0 else " " + word
            await send({"type": "http.response.body", "body": event({"content": piece}), "more_body": True})
        await send({"type": "http.response.body", "body": event({}, "stop") + b"data: [DONE]\n\n"})


async def _json(send: Any, status: int, payload: Any) -> None:
    data = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [*_JSON_HEADERS, (b"content-length", str(len(data)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": data})


def parse_first_chunk_time(content: str) -> float | None:
    """The send time a first delta carries (``t=<epoch> ``), or None."""
    if not content.startswith(FIRST_CHUNK_PREFIX):
        return None
    try:
        return float(content[len(FIRST_CHUNK_PREFIX):].split(" ", 1)[0])
    except ValueError:
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--first-chunk-delay-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    # Bind ourselves with proto=IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted sockets
    # (see tests/model_server.py `_bind`): no Nagle/delayed-ACK stalls in the figures.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    config = uvicorn.Config(TimedModel(args.first_chunk_delay_ms), log_level="warning", access_log=False,
                            lifespan="off")  # fmt: skip
    server = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.005)
        if server.started:
            print(f"timed-model listening on http://{args.host}:{sock.getsockname()[1]}", flush=True)
        await task

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
