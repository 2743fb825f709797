"""docs/examples/webhook_receiver.py, the receiver docs/webhooks.md shows, run as it is (its own process) against
real Parley deliveries: it accepts them (204) and handles each delivery once, and refuses (401) a forged
signature and a stale one."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import free_port
from tests.integration.helpers import client, create_agent, wait_job
from tests.integration.test_webhooks import FAST, register
from tests.integration.test_webhooks import queue as queue_turn

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "webhook_receiver.py"


class Example:
    """The example receiver's process and the lines it prints."""

    def __init__(self, secret: str, port: int) -> None:
        env = {**os.environ, "PARLEY_WEBHOOK_SECRET": secret}
        self.process = subprocess.Popen([sys.executable, str(EXAMPLE), str(port)], env=env, stdout=subprocess.PIPE,
                                        text=True)  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        assert self.line(10).startswith("listening on")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def line(self, timeout: float) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the example receiver printed nothing within {timeout} s") from None

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)
        self.reader.join(10)  # it ends at the pipe's end
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def started() -> Iterator[list[Example]]:
    examples: list[Example] = []
    yield examples
    for example in examples:
        example.stop()


def _signed(secret: str, body: bytes, at_s: int) -> str:
    return f"t={at_s},v1={hmac.new(secret.encode(), f'{at_s}.'.encode() + body, hashlib.sha256).hexdigest()}"


def test_the_documented_receiver_verifies_and_handles_real_deliveries(stack: Any, port: int,
                                                                      started: list[Example]) -> None:  # fmt: skip
    stack.start_web(env=FAST)
    stack.start_workers(env=FAST)
    url = f"http://127.0.0.1:{port}/"
    with client(stack.web_url, stack.api_key) as http:
        create_agent(http)
        hook = register(http, url)
        example = Example(hook["secret"], port)
        started.append(example)
        job_id = queue_turn(http)
        wait_job(http, job_id)
        printed = json.loads(example.line(20))
        assert printed["type"] == "turn.finished" and printed["job_id"] == job_id and printed["status"] == "finished"
        assert printed["delivery"].startswith("dlv_")

    body = json.dumps({"type": "turn.failed", "job": {"job_id": "job_x", "status": "failed"}}).encode()
    now = int(time.time())
    headers = {"Content-Type": "application/json", "Parley-Delivery-Id": "dlv_test"}
    sent = [
        ({**headers, "Parley-Signature": _signed("whsec_wrong", body, now)}, 401),
        ({**headers, "Parley-Signature": _signed(hook["secret"], body, now - 3600)}, 401),  # stale
        ({**headers, "Parley-Signature": f"t={now},v1=00"}, 401),
        (headers, 401),
        ({**headers, "Parley-Signature": _signed(hook["secret"], body, now)}, 204),
        ({**headers, "Parley-Signature": _signed(hook["secret"], body, now + 1)}, 204),  # a retry: handled once
    ]  # fmt: skip
    for sent_headers, expected in sent:
        assert httpx.post(url, content=body, headers=sent_headers).status_code == expected
    assert json.loads(example.line(5)) == {"delivery": "dlv_test", "type": "turn.failed", "job_id": "job_x",
                                           "status": "failed"}  # fmt: skip
    with pytest.raises(AssertionError):
        example.line(1)  # the retry printed nothing
