"""One signed POST of a webhook delivery, to a checked address, bounded.

Like `http_get` and the MCP client (parley.tools.network): the URL's host is resolved and every address
checked (public, or named in PARLEY_PRIVATE_NETWORKS_ALLOWED) at each attempt, and the request goes to that
very address (the `Host` header and the TLS name keep the URL's host), so a DNS answer that changes between the
check and the connect cannot lead elsewhere. No redirect is followed (a 3xx is a failed attempt), proxies from
the environment are ignored, at most `MAX_ANSWER_BYTES` of the answer are read, and the whole attempt ends
within `timeout_s`. Asynchronous (httpx), so a slow receiver holds nothing but its own task.

The signature: `Parley-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the secret>`, t
being this attempt's time, over the body bytes exactly as sent (docs/webhooks.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from parley.shared.clock import now_ms
from parley.shared.store.webhooks import Attempt
from parley.tools import network

MAX_ANSWER_BYTES = 64 * 1024
"""Most bytes read of a receiver's answer (its status is what counts)."""
MAX_ERROR_CHARS = 300
USER_AGENT = "Parley-Webhooks/1"
PURPOSE = "webhooks must be public unless PARLEY_PRIVATE_NETWORKS_ALLOWED names them"


def signature(secret: str, body: bytes, at_s: int) -> str:
    """The `Parley-Signature` header's value for `body` sent at `at_s` (unix seconds)."""
    digest = hmac.new(secret.encode(), f"{at_s}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at_s},v1={digest}"


@dataclass(frozen=True)
class Outcome:
    """An attempt as recorded, and its metric's outcome (telemetry.webhook_attempt)."""

    attempt: Attempt
    kind: str


Done = Callable[..., Outcome]
"""Makes the attempt's Outcome: (kind, status_code=None, error=None)."""


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def post(url: str, body: bytes, headers: dict[str, str], *, allowed: network.Allowlist,
               timeout_s: float) -> Outcome:  # fmt: skip
    """POST `body` to `url` with `headers` once; never raises for what the receiver or the network does."""
    started_ms, started = now_ms(), time.monotonic()

    def done(kind: str, status_code: int | None = None, error: str | None = None) -> Outcome:
        duration = int((time.monotonic() - started) * 1000)
        shown = None if error is None else error[:MAX_ERROR_CHARS]
        return Outcome(Attempt(at=started_ms, duration_ms=duration, status_code=status_code, error=shown), kind)

    try:
        async with asyncio.timeout(timeout_s):
            return await _send(url, body, headers, allowed, done)
    except TimeoutError:
        return done("timeout", error=f"no answer within {timeout_s:g} s")
    except Exception as error:  # noqa: BLE001 (a hostile receiver or URL may raise anything: one failed attempt)
        return done("unreachable", error=f"{type(error).__name__}: {error}")


async def _send(url: str, body: bytes, headers: dict[str, str], allowed: network.Allowlist, done: Done) -> Outcome:
    parsed = httpx.URL(url)
    try:
        addresses = await network.resolve_async(parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80))
        network.check_host(parsed.host, addresses, allowed, purpose=PURPOSE)
    except (network.PrivateAddress, network.Unresolvable) as error:
        return done("refused", error=str(error))
    extensions = {}
    if parsed.scheme == "https" and not _is_ip(parsed.host):
        extensions["sni_hostname"] = parsed.host  # TLS name and certificate check: the URL's host
    sent = {**headers, "Host": parsed.netloc.decode("ascii"), "User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    failure: Exception | None = None
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(trust_env=False, follow_redirects=False, limits=limits, timeout=None) as client:
        for address in addresses:
            request = client.build_request("POST", parsed.copy_with(host=address), content=body, headers=sent,
                                           extensions=extensions)  # fmt: skip
            try:
                response = await client.send(request, stream=True)
            except httpx.ConnectError as error:
                failure = error
                continue
            except httpx.HTTPError as error:
                return done("unreachable", error=f"{type(error).__name__}: {error}")
            try:
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read >= MAX_ANSWER_BYTES:
                        break
            except httpx.HTTPError:
                pass  # the status is what counts
            finally:
                await response.aclose()
            code = response.status_code
            if 200 <= code < 300:
                return done("delivered", status_code=code)
            return done("status", status_code=code, error=f"HTTP {code}")
    return done("unreachable", error=f"cannot connect to {parsed.host}: {failure}")
