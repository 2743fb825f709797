"""`http_get`: the text of a web page, fetched with size and time limits, from public addresses only.

Server-side request forgery is what a URL-fetching tool invites (a model told "fetch
http://169.254.169.254/..." would read cloud credentials), so unless PARLEY_HTTP_GET_ALLOW_PRIVATE
is set:

1. only `http` and `https` URLs are fetched;
2. the host is resolved here (`socket.getaddrinfo`) and the URL is refused if ANY of its addresses
   is loopback, private, link-local, multicast, reserved, unspecified or otherwise not global
   (IPv4 inside IPv6 too: mapped, 6to4, Teredo, NAT64), before any connection is made;
3. the connection goes to the address that was checked (the URL's host is replaced by it; the
   `Host` header and TLS SNI/certificate check keep the name), so a DNS answer that changes between
   check and connect (DNS rebinding) cannot lead elsewhere;
4. redirects are followed here, at most `MAX_REDIRECTS`, each hop checked as in 2;
5. proxies from the environment are ignored (`trust_env=False`): a proxy would make the checks moot.

The body is streamed and cut at PARLEY_HTTP_GET_MAX_BYTES (after content decoding, so a gzip bomb
stops there too); the whole fetch, redirects included, must end within PARLEY_HTTP_GET_TIMEOUT_S.
"""

from __future__ import annotations

import codecs
import ipaddress
import socket
import time
from dataclasses import dataclass

import httpx

from .context import ToolContext, ToolError
from .html_text import html_to_text
from .registry import tool

MAX_REDIRECTS = 5
USER_AGENT = "Parley-http_get/0.1"
ACCEPT = "text/html, text/plain;q=0.9, application/json;q=0.8, text/*;q=0.7"
TEXT_TYPES = ("application/json", "application/xml", "application/javascript", "application/xhtml+xml")
HTML_TYPES = ("text/html", "application/xhtml+xml")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@tool
def http_get(url: str, ctx: ToolContext) -> str:
    """Fetch a public web page or document over http(s) and return its text (HTML reduced to readable text).

    Args:
        url: the absolute http:// or https:// URL to fetch.
    """
    settings = ctx.settings
    return fetch_text(url, allow_private=settings.http_get_allow_private, max_bytes=settings.http_get_max_bytes,
                      timeout_s=settings.http_get_timeout_s)  # fmt: skip


@dataclass(frozen=True)
class _Answer:
    status: int
    content_type: str
    body: bytes
    cut: bool
    encoding: str | None
    location: str | None


def fetch_text(url: str, *, allow_private: bool, max_bytes: int, timeout_s: float) -> str:
    """`HTTP <status> <url>`, a line on the content, a blank line, then the text of the page."""
    deadline = time.monotonic() + timeout_s
    current = _checked_url(url)
    # No kept-alive connections: pooled by address, one could carry a later hop's request to another
    # name on the same address over TLS verified for the first name.
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(trust_env=False, follow_redirects=False, limits=limits) as client:
        for _ in range(MAX_REDIRECTS + 1):
            addresses = resolve(current, allow_private=allow_private)
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


def resolve(url: httpx.URL, *, allow_private: bool) -> list[str]:
    """The addresses of the URL's host; ToolError when any of them is not public (unless allowed)."""
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise ToolError(f"cannot resolve {host!r}: {error}") from error
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise ToolError(f"{host!r} has no address")
    if not allow_private:
        for address in addresses:
            reason = forbidden_reason(ipaddress.ip_address(address.partition("%")[0]))
            if reason:
                shown = host if host == address else f"{host} resolves to {address}, which"
                article = "an" if reason[0] in "aeiouAEIOU" else "a"
                raise ToolError(f"refused: {shown} is {article} {reason} address; "
                                "http_get fetches public addresses only")  # fmt: skip
    return addresses


def forbidden_reason(address: IPAddress) -> str | None:
    """Why `address` is not one to fetch from (e.g. "loopback"), or None for a global unicast address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            reason = forbidden_reason(embedded)
            if reason:
                return f"IPv6-wrapped {reason}"
    for flag, reason in (("is_loopback", "loopback"), ("is_link_local", "link-local"),
                         ("is_unspecified", "unspecified"), ("is_multicast", "multicast"), ("is_reserved", "reserved"),
                         ("is_private", "private")):  # fmt: skip
        if getattr(address, flag):
            return reason
    return None if address.is_global else "non-public"


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
                                                         "Accept": ACCEPT},
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
    body = bytearray()
    cut = False
    try:
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > max_bytes:
                del body[max_bytes:]
                cut = True
                break
            if time.monotonic() > deadline:  # a server sending a trickle never trips the read timeout
                raise ToolError(f"fetching {url} timed out after {timeout_s:g} s")
    except httpx.TimeoutException as error:
        raise ToolError(f"fetching {url} timed out after {timeout_s:g} s") from error
    except httpx.HTTPError as error:
        raise ToolError(f"reading {url} failed: {error}") from error
    return _Answer(response.status_code, content_type, bytes(body), cut, response.charset_encoding, None)


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
