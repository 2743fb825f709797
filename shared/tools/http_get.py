"""`http_get`: the text of a web page, fetched with size and time limits, from public addresses only.

Server-side request forgery is what a URL-fetching tool invites (a model told "fetch
http://169.254.169.254/..." would read cloud credentials), so unless PARLEY_HTTP_GET_ALLOW_PRIVATE
is set:

1. only `http` and `https` URLs are fetched;
2. the host is resolved here (`socket.getaddrinfo`) and the URL is refused if ANY of its addresses
   is loopback, private, link-local, multicast, reserved, unspecified or otherwise not global
   (IPv4 inside IPv6 too: mapped, 6to4, Teredo, NAT64), before any connection is made, unless
   PARLEY_PRIVATE_NETWORKS_ALLOWED names the host or a network holding the address (parley.tools.network);
3. the connection goes to the address that was checked (the URL's host is replaced by it; the
   `Host` header and TLS SNI/certificate check keep the name), so a DNS answer that changes between
   check and connect (DNS rebinding) cannot lead elsewhere;
4. redirects are followed here, at most `MAX_REDIRECTS`, each hop checked as in 2;
5. proxies from the environment are ignored (`trust_env=False`): a proxy would make the checks moot.

The body is read raw and decoded here, a layer at a time, each layer (`identity`, `gzip`, `x-gzip`,
`deflate`; at most `MAX_CODINGS` of them stacked) asked for no more than PARLEY_HTTP_GET_MAX_BYTES
+ 1 bytes in all (`zlib`'s `max_length`), so a compression bomb, however it is stacked, never
grows the worker by more than a few times that bound; the text is cut at PARLEY_HTTP_GET_MAX_BYTES.
Other codings are refused. The whole fetch, redirects included, must end within
PARLEY_HTTP_GET_TIMEOUT_S.
"""

from __future__ import annotations

import codecs
import ipaddress
import time
import zlib
from dataclasses import dataclass

import httpx

from parley.tools import network
from parley.tools.context import ToolContext, ToolError
from parley.tools.html_text import html_to_text
from parley.tools.network import Allowlist, forbidden_reason
from parley.tools.registry import tool

MAX_REDIRECTS = 5
USER_AGENT = "Parley-http_get/0.1"
ACCEPT = "text/html, text/plain;q=0.9, application/json;q=0.8, text/*;q=0.7"
ACCEPT_ENCODING = "gzip, deflate"
MAX_CODINGS = 3
"""Most content codings stacked on one response (`gzip, gzip` is two); more is refused."""
TEXT_TYPES = ("application/json", "application/xml", "application/javascript", "application/xhtml+xml")
HTML_TYPES = ("text/html", "application/xhtml+xml")

__all__ = ["forbidden_reason", "fetch_text", "http_get", "resolve"]


@tool
def http_get(url: str, ctx: ToolContext) -> str:
    """Fetch a public web page or document over http(s) and return its text (HTML reduced to readable text).

    Args:
        url: the absolute http:// or https:// URL to fetch.
    """
    settings = ctx.settings
    return fetch_text(url, allow_private=settings.http_get_allow_private, max_bytes=settings.http_get_max_bytes,
                      timeout_s=settings.http_get_timeout_s,
                      allowed=network.parse_allowlist(settings.private_networks_allowed))  # fmt: skip


@dataclass(frozen=True)
class _Answer:
    status: int
    content_type: str
    body: bytes
    cut: bool
    encoding: str | None
    location: str | None


def fetch_text(url: str, *, allow_private: bool, max_bytes: int, timeout_s: float,
               allowed: Allowlist | None = None) -> str:  # fmt: skip
    """`HTTP <status> <url>`, a line on the content, a blank line, then the text of the page."""
    deadline = time.monotonic() + timeout_s
    current = _checked_url(url)
    # No kept-alive connections: pooled by address, one could carry a later hop's request to another
    # name on the same address over TLS verified for the first name.
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(trust_env=False, follow_redirects=False, limits=limits) as client:
        for _ in range(MAX_REDIRECTS + 1):
            addresses = resolve(current, allow_private=allow_private, allowed=allowed)
            answer = _get(client, current, addresses, deadline=deadline, timeout_s=timeout_s, max_bytes=max_bytes)
            if answer.location is None:
                return _render(current, answer, max_bytes)
            current = _checked_url(str(current.join(answer.location)))
    raise ToolError(f"{url} redirects more than {MAX_REDIRECTS} times")


def _checked_url(text: str) -> httpx.URL:
    try:
        url = httpx.URL(text.strip())
    except (httpx.InvalidURL, TypeError, ValueError) as error:
        raise ToolError(f"not a valid URL: {text!r} ({error})") from error
    if url.scheme not in ("http", "https"):
        raise ToolError(f"only http:// and https:// URLs can be fetched, not {text!r}")
    if not url.host:
        raise ToolError(f"the URL {text!r} has no host")
    return url


def resolve(url: httpx.URL, *, allow_private: bool = False, allowed: Allowlist | None = None) -> list[str]:
    """The addresses of the URL's host; ToolError when any of them is not public and not allowed (every address
    with `allow_private`, PARLEY_HTTP_GET_ALLOW_PRIVATE; else those `allowed` names)."""
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        addresses = network.resolve(host, port)
    except network.Unresolvable as error:
        raise ToolError(str(error)) from error
    allowlist = network.EVERYTHING if allow_private else (allowed or network.Allowlist())
    try:
        network.check_host(host, addresses, allowlist, purpose="http_get fetches public addresses only",
                           reason_of=forbidden_reason)  # fmt: skip
    except network.PrivateAddress as error:
        raise ToolError(str(error)) from error
    return addresses


def _get(client: httpx.Client, url: httpx.URL, addresses: list[str], *, deadline: float, timeout_s: float,
         max_bytes: int) -> _Answer:  # fmt: skip
    """GET `url` from the first of the checked `addresses` that accepts a connection."""
    host_header = url.netloc.decode("ascii")
    extensions = {}
    if url.scheme == "https" and not _is_ip(url.host):
        extensions["sni_hostname"] = url.raw_host.decode("ascii")  # TLS name and certificate check: the host's
    failure: Exception | None = None
    for address in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        request = client.build_request(
            "GET", url.copy_with(host=address), headers={"Host": host_header, "User-Agent": USER_AGENT,
                                                         "Accept": ACCEPT, "Accept-Encoding": ACCEPT_ENCODING},
            extensions=extensions, timeout=httpx.Timeout(remaining),
        )  # fmt: skip
        try:
            response = client.send(request, stream=True)
        except httpx.ConnectError as error:
            failure = error
            continue
        except httpx.TimeoutException as error:
            raise ToolError(f"fetching {url} timed out after {timeout_s:g} s") from error
        except httpx.HTTPError as error:
            raise ToolError(f"fetching {url} failed: {error}") from error
        try:
            return _read(response, url, deadline=deadline, timeout_s=timeout_s, max_bytes=max_bytes)
        finally:
            response.close()
    if failure is None:
        raise ToolError(f"fetching {url} timed out after {timeout_s:g} s")
    raise ToolError(f"cannot connect to {url.host}: {failure}")


def _read(response: httpx.Response, url: httpx.URL, *, deadline: float, timeout_s: float,
          max_bytes: int) -> _Answer:  # fmt: skip
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if response.is_redirect:
        return _Answer(response.status_code, content_type, b"", False, None, response.headers["location"])
    if content_type and not _is_text(content_type):
        raise ToolError(f"{url} answered HTTP {response.status_code} with {content_type}, which is not text")
    decoder = Decoder(_codings(response, url), limit=max_bytes + 1)
    body = bytearray()
    try:
        for chunk in response.iter_raw():
            body += decoder.decode(chunk)
            if len(body) > max_bytes or decoder.full:
                break
            if time.monotonic() > deadline:  # a server sending a trickle never trips the read timeout
                raise ToolError(f"fetching {url} timed out after {timeout_s:g} s")
    except httpx.TimeoutException as error:
        raise ToolError(f"fetching {url} timed out after {timeout_s:g} s") from error
    except httpx.HTTPError as error:
        raise ToolError(f"reading {url} failed: {error}") from error
    except zlib.error as error:
        raise ToolError(f"{url} sent a body that does not decompress: {error}") from error
    cut = len(body) > max_bytes or decoder.full
    del body[max_bytes:]
    return _Answer(response.status_code, content_type, bytes(body), cut, response.charset_encoding, None)


def _codings(response: httpx.Response, url: httpx.URL) -> list[str]:
    """The response's content codings in the order they were applied; ToolError for what is not decoded here."""
    listed = [part.strip().lower() for value in response.headers.get_list("content-encoding")
              for part in value.split(",")]  # fmt: skip
    codings = [coding for coding in listed if coding and coding != "identity"]
    unknown = sorted({coding for coding in codings if coding not in ("gzip", "x-gzip", "deflate")})
    if unknown:
        raise ToolError(f"{url} sent its body with Content-Encoding {', '.join(unknown)}, which http_get does not "
                        "decode (it decodes gzip and deflate)")  # fmt: skip
    if len(codings) > MAX_CODINGS:
        raise ToolError(f"{url} sent its body compressed {len(codings)} times over; http_get decodes at most "
                        f"{MAX_CODINGS} layers")  # fmt: skip
    return codings


class Decoder:
    """Undoes stacked content codings chunk by chunk, no layer ever giving more than `limit` bytes in all.

    httpx decodes a whole chunk at once, so 1 KB of `gzip, gzip` on the wire can become hundreds
    of megabytes in one call; here every layer is a `zlib` decompressor asked for at most what is
    left of `limit` (`max_length`), and once a layer has given `limit` bytes, `full` is set: what
    it gave still goes through the layers after it, and no more input is decoded. Input a layer
    has not consumed stays in its `unconsumed_tail`, no larger than what the layer before it gave.
    """

    def __init__(self, codings: list[str], limit: int) -> None:
        self.limit = limit
        self.full = False
        self._layers = [_Layer(coding, limit) for coding in reversed(codings)]  # the last one applied comes off first

    def decode(self, data: bytes) -> bytes:
        """The decoded bytes `data` yields, within what is left of the limit."""
        if self.full:
            return b""
        for layer in self._layers:
            data = layer.decode(data) if data else b""
            self.full = self.full or layer.full  # what a full layer gave still goes through the layers after it
        return data


class _Layer:
    """One content coding: `zlib.decompressobj` bounded by what is left of `limit`."""

    def __init__(self, coding: str, limit: int) -> None:
        self.coding = coding
        self.left = limit
        self.full = False
        self._zlib: zlib._Decompress | None = None
        self._started = False

    def decode(self, data: bytes) -> bytes:
        out = bytearray()
        while data and not self.full:
            decompressor = self._decompressor(data)
            piece = decompressor.decompress(data, self.left)
            out += piece
            self.left -= len(piece)
            self.full = self.left <= 0
            if decompressor.unconsumed_tail:  # stopped at max_length: the limit is reached
                self.full = True
            elif decompressor.eof and self.coding != "deflate":
                data = decompressor.unused_data  # gzip may hold several members, one after another
                self._zlib = None
            else:
                data = b""
        return bytes(out)

    def _decompressor(self, data: bytes) -> zlib._Decompress:
        """The layer's decompressor; `deflate` is zlib-wrapped as the RFC says or, as some servers send it, raw."""
        if self._zlib is None:
            if self.coding == "deflate":
                wbits = zlib.MAX_WBITS if self._started or _zlib_header(data) else -zlib.MAX_WBITS
            else:
                wbits = 16 + zlib.MAX_WBITS
            self._zlib = zlib.decompressobj(wbits)
            self._started = True
        return self._zlib


def _zlib_header(data: bytes) -> bool:
    """Whether `data` starts with a zlib header (RFC 1950: deflate method, check bits a multiple of 31)."""
    return len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0


def _render(url: httpx.URL, answer: _Answer, max_bytes: int) -> str:
    encoding = answer.encoding or "utf-8"
    try:
        codecs.lookup(encoding)
    except LookupError:
        encoding = "utf-8"
    text = answer.body.decode(encoding, errors="replace")
    if answer.content_type in HTML_TYPES or (not answer.content_type and "<html" in text[:1000].lower()):
        text = html_to_text(text)
    size = f"first {max_bytes} bytes" if answer.cut else f"{len(answer.body)} bytes"
    return f"HTTP {answer.status} {url}\n{answer.content_type or 'unknown type'}, {size}\n\n{text}"


def _is_text(content_type: str) -> bool:
    return (content_type.startswith("text/") or content_type in TEXT_TYPES
            or content_type.endswith(("+json", "+xml")))  # fmt: skip


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
