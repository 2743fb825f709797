"""A client that stops reading an event stream does not keep it: one send blocked for
PARLEY_SSE_SEND_TIMEOUT_S ends the stream and gives back its place (and its subscription).

The client is a raw socket with a small receive buffer that sends its request, reads the status
line and then never reads again, while the job emits megabytes of deltas: the web's buffers fill
and uvicorn's `send` waits. With PARLEY_MAX_STREAMS_PER_TENANT=1 the tenant's next stream is
refused (429) while the first holds its place; once the web ended it, the web's subscription to the
job's channel is gone and the next stream is admitted, resumes with Last-Event-ID and reads to `done`.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

from parley.shared.store import keys
from tests.integration.helpers import client, create_agent, wait_job
from tests.sse_client import collect

SEND_TIMEOUT_S = 3
REPLY_CHARS = 3_000_000
CHUNKS = 3_000


def _open_and_never_read(base_url: str, key: str, path: str) -> socket.socket:
    """Send a GET for `path`, read only the status line, and leave the connection unread."""
    url = urlsplit(base_url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.connect((url.hostname or "127.0.0.1", url.port or 80))
    request = (f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {key}\r\n"
               "Accept: text/event-stream\r\n\r\n")  # fmt: skip
    sock.sendall(request.encode())
    sock.settimeout(10)
    status_line = sock.recv(12)
    assert status_line.startswith(b"HTTP/1.1 200"), status_line
    return sock


def test_a_stream_whose_client_reads_nothing_ends_and_gives_back_its_place(stack) -> None:
    stack.start_web(1, env={"PARLEY_MAX_STREAMS_PER_TENANT": "1", "PARLEY_SSE_SEND_TIMEOUT_S": str(SEND_TIMEOUT_S)})
    stack.start_workers(1)
    reply = ("x" * 999 + " ") * (REPLY_CHARS // 1000)
    stack.model_server.control("script", [{"reply": reply, "chunks": CHUNKS}])
    with client(stack.web_url, stack.api_key, timeout=60) as http:
        agent = create_agent(http)
        accepted = http.post("/api/v1/chat/jobs", json={"message": "a long one", "agent": agent["id"]})
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        events_path = f"/api/v1/jobs/{job_id}/events"

        stuck = _open_and_never_read(stack.web_url, stack.api_key, events_path)
        try:
            refused = http.get(events_path)  # the stuck stream holds the tenant's one place
            assert refused.status_code == 429, refused.text
            assert wait_job(http, job_id, timeout=120)["status"] == "finished"

            # Every event is emitted; the stuck stream's send waits on its full buffers. Within the
            # send timeout (plus a ping interval and slack) the web ends it: the web's subscription to
            # the job's channel goes, and the tenant's place is free again.
            channel = keys.live_channel("alice", job_id)
            r = stack.redis()
            deadline = time.monotonic() + SEND_TIMEOUT_S + 30
            while r.pubsub_numsub(channel) != [(channel, 0)]:
                assert time.monotonic() < deadline, "the stuck stream is still subscribed"
                time.sleep(0.2)
            resumed = collect(http, "GET", events_path, headers={"Last-Event-ID": "0-1"})  # not 429
            assert resumed[-1].type == "done"
            content = "".join(event.data["content"] for event in resumed if event.type == "delta")
            assert content == reply
        finally:
            stuck.close()
