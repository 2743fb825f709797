"""A real OTLP/HTTP trace receiver for tests and benchmarks: `POST /v1/traces` takes an
`ExportTraceServiceRequest` as protobuf (`application/x-protobuf`, what the SDK's exporter sends) or as OTLP JSON
(`application/json`), decodes it with `opentelemetry-proto` and keeps every span, flattened.

    python -m tests.otlp_receiver --port 4318     # serves http://127.0.0.1:4318/v1/traces

In a test, `OtlpReceiver()` runs it on a free loopback port in a thread (`with OtlpReceiver() as receiver:`);
`receiver.spans()` is what arrived so far, `receiver.wait_for(predicate)` waits for it.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUSES = {0: "UNSET", 1: "OK", 2: "ERROR"}
MAX_BODY_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as it arrived: ids in lowercase hex ('' for no parent), times in ns since the epoch."""

    service: str
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    start_ns: int
    end_ns: int
    status: str
    status_message: str
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return {item.key: _value(item.value) for item in value.kvlist_value.values}
    return getattr(value, which) if which else None


def decode(request: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    """Every span of an export request, with its resource's `service.name`."""
    spans = []
    for resource_spans in request.resource_spans:
        resource = {item.key: _value(item.value) for item in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(ReceivedSpan(
                    service=str(resource.get("service.name", "")), trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(), parent_span_id=span.parent_span_id.hex(), name=span.name,
                    kind=KINDS.get(span.kind, str(span.kind)), start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano, status=STATUSES.get(span.status.code, str(span.status.code)),
                    status_message=span.status.message,
                    attributes={item.key: _value(item.value) for item in span.attributes},
                    events=[event.name for event in span.events],
                ))  # fmt: skip
    return spans


def parse(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    """The request from its body: OTLP JSON (ids in hex, as OTLP/HTTP JSON writes them) or protobuf."""
    request = ExportTraceServiceRequest()
    if "json" in content_type:
        json_format.Parse(body.decode("utf-8"), request)
        for resource_spans in request.resource_spans:  # json_format read the hex ids as base64: put them right
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    for name in ("trace_id", "span_id", "parent_span_id"):
                        raw = getattr(span, name)
                        if raw:
                            setattr(span, name, bytes.fromhex(base64.b64encode(raw).decode()))
    else:
        request.ParseFromString(body)
    return request


class OtlpReceiver:
    """The receiver on `127.0.0.1:<port>` (0: a free one), served by a thread until `close`."""

    def __init__(self, port: int = 0) -> None:
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        self.requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.rstrip("/") != "/v1/traces":
                    self.send_error(404)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:
                    self.send_error(413)
                    return
                body = self.rfile.read(length)
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                content_type = self.headers.get("Content-Type") or "application/x-protobuf"
                try:
                    spans = decode(parse(body, content_type))
                except Exception as error:  # noqa: BLE001  (a broken export is answered 400, as a collector does)
                    self.send_error(400, str(error))
                    return
                receiver._add(spans)
                if "json" in content_type:
                    answer, answer_type = b"{}", "application/json"
                else:
                    answer, answer_type = ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf"
                self.send_response(200)
                self.send_header("Content-Type", answer_type)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="otlp-receiver", daemon=True)
        self._thread.start()

    def _add(self, spans: list[ReceivedSpan]) -> None:
        with self._lock:
            self._spans.extend(spans)
            self.requests += 1

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()

    def wait_for(self, predicate: Callable[[list[ReceivedSpan]], bool], timeout_s: float = 20.0) -> list[ReceivedSpan]:
        """The spans once `predicate` holds for them; AssertionError (with what arrived) after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            spans = self.spans()
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                shown = "\n".join(f"  {s.service} {s.trace_id} {s.span_id}<-{s.parent_span_id or '-'} {s.name}"
                                  for s in spans)  # fmt: skip
                raise AssertionError(f"the spans wanted did not arrive within {timeout_s} s; got:\n{shown}")
            time.sleep(0.05)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> OtlpReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4318)
    args = parser.parse_args()
    receiver = OtlpReceiver(args.port)
    print(f"OTLP receiver on {receiver.url}/v1/traces", flush=True)
    try:
        while True:
            time.sleep(5)
            print(f"{receiver.requests} exports, {len(receiver.spans())} spans", flush=True)
    except KeyboardInterrupt:
        receiver.close()


if __name__ == "__main__":
    main()
