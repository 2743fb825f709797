"""The hostile benchmark's model and web server: an OpenAI-compatible streaming chat endpoint that answers
ordinary turns after a fixed time, and the hostile tenant's turns the way that hurts, plus a compression bomb.

Why its own server: tests/model_server.py answers from one shared script queue, so it cannot answer one
tenant's turns differently from the others' while both run at once. This one decides by the request:

* a conversation whose user text holds ``HOSTILE-REGEX <n>`` is answered ``{"answer": "aaa...a!"}`` (n times
  ``a``, then ``!``) at once, every time, repair requests included: the string that makes a backtracking
  engine take about 2**n steps on ``^(a+)+$``;
* a last user message ``HOSTILE-FETCH <url>`` is answered with a call of ``http_get`` on that url, and the
  tool's result (the next request ends with a ``tool`` message) with ``fetched``;
* anything else is answered ``echo: <last user message>`` in ``--chunks`` chunks over ``--answer-ms``.

``GET /bomb`` answers ``Content-Encoding: gzip, gzip``: ``--bomb-mib`` MiB of zeros compressed twice, about
a hundred kB on the wire for 100 MiB.

    python -m bench.hostile.model --port 8003 [--answer-ms 200] [--chunks 4] [--bomb-mib 100]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import re
import socket
import time
import uuid
from typing import Any

import uvicorn

_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
_REGEX = re.compile(r"HOSTILE-REGEX (\d+)")
_FETCH = re.compile(r"HOSTILE-FETCH (\S+)")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def bomb(mib: int) -> bytes:
    """`mib` MiB of zeros, gzip inside gzip."""
    return gzip.compress(gzip.compress(bytes(mib * 1024 * 1024), compresslevel=9), compresslevel=9)


class HostileModel:
    def __init__(self, answer_ms: float, chunks: int, bomb_mib: int) -> None:
        self.answer_s = answer_ms / 1000
        self.chunks = max(1, chunks)
        self.bomb = bomb(bomb_mib)
        self.counts = {"ordinary": 0, "regex": 0, "fetch": 0, "fetched": 0, "bomb": 0}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        if path == "/v1/chat/completions":
            await self._chat(json.loads(body), send)
        elif path == "/bomb":
            self.counts["bomb"] += 1
            headers = [(b"content-type", b"text/plain"), (b"content-encoding", b"gzip, gzip"),
                       (b"content-length", str(len(self.bomb)).encode())]  # fmt: skip
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": self.bomb})
        elif path == "/_control/counts":
            await _json(send, self.counts)
        else:
            await _json(send, {"error": {"message": "not found"}}, 404)

    async def _chat(self, request: dict[str, Any], send: Any) -> None:
        messages = [m for m in request.get("messages", []) if isinstance(m, dict)]
        users = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
        last_user = users[-1] if users else ""
        regex = next((found for text in users if (found := _REGEX.search(text))), None)
        fetch = _FETCH.search(last_user)
        stream = _Stream(send, request.get("model") or "hostile-model")
        if regex:
            self.counts["regex"] += 1
            await stream.text([json.dumps({"answer": "a" * int(regex.group(1)) + "!"})], 0.0)
        elif fetch and messages and messages[-1].get("role") == "tool":
            self.counts["fetched"] += 1
            await stream.text(["fetched"], 0.0)
        elif fetch:
            self.counts["fetch"] += 1
            await stream.tool_call("http_get", {"url": fetch.group(1)})
        else:
            self.counts["ordinary"] += 1
            await stream.text(_split(f"echo: {last_user}", self.chunks), self.answer_s / self.chunks)


def _split(text: str, chunks: int) -> list[str]:
    size = -(-len(text) // chunks)
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class _Stream:
    """One streamed chat completion in OpenAI's chunk format."""

    def __init__(self, send: Any, model: str) -> None:
        self.send = send
        self.model = model
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"

    def _event(self, delta: dict[str, Any], finish: str | None) -> bytes:
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": int(time.time()), "model": self.model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    async def _body(self, data: bytes, more: bool = True) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def text(self, pieces: list[str], pause_s: float) -> None:
        await self.send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        await self._body(self._event({"role": "assistant", "content": ""}, None))
        for piece in pieces:
            if pause_s:
                await asyncio.sleep(pause_s)
            await self._body(self._event({"content": piece}, None))
        await self._body(self._event({}, "stop") + b"data: [DONE]\n\n", more=False)

    async def tool_call(self, name: str, arguments: dict[str, Any]) -> None:
        await self.send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        await self._body(self._event({"role": "assistant", "content": None}, None))
        call = {"index": 0, "id": f"call_{uuid.uuid4().hex[:8]}", "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)}}  # fmt: skip
        await self._body(self._event({"tool_calls": [call]}, None))
        await self._body(self._event({}, "tool_calls") + b"data: [DONE]\n\n", more=False)


async def _json(send: Any, payload: Any, status: int = 200) -> None:
    data = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": data})


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile.model")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--answer-ms", type=float, default=200.0)
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--bomb-mib", type=int, default=100)
    args = parser.parse_args()
    app = HostileModel(args.answer_ms, args.chunks, args.bomb_mib)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    print(f"hostile-model listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
