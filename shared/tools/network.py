"""The one check of where a tool may connect: public addresses, plus what PARLEY_PRIVATE_NETWORKS_ALLOWED names.

A URL a tenant or a model gives (`http_get`'s, an MCP server's) must not reach the deployment's own
network (cloud metadata at 169.254.169.254, Redis on loopback, the intranet): every address its host
resolves to is checked, and ANY loopback, private, link-local, multicast, reserved, unspecified or
otherwise non-global address (IPv4 inside IPv6 too: mapped, 6to4, Teredo, NAT64) refuses the URL,
unless the operator's allowlist names the host or a network holding that address.

The allowlist is comma-separated CIDRs (`10.0.0.0/8`, `127.0.0.1`) or host names (`mcp.internal`,
matched exactly, case-insensitively, without a trailing dot). A host name entry allows every address
that name resolves to, so name only hosts whose DNS the operator controls.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class PrivateAddress(ValueError):
    """A host resolves to an address tools may not reach; the message says which and why."""


class Unresolvable(ValueError):
    """A host name has no address (or is not a valid name)."""


@dataclass(frozen=True)
class Allowlist:
    """What PARLEY_PRIVATE_NETWORKS_ALLOWED lets tools reach although it is not public."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()
    everything: bool = False
    """Every address allowed (PARLEY_HTTP_GET_ALLOW_PRIVATE, for `http_get` only)."""

    def allows(self, host: str, address: IPAddress) -> bool:
        """Whether `address` (one of `host`'s) may be reached although it is not public."""
        if self.everything or normal_host(host) in self.hosts:
            return True
        candidates = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(candidate in network for candidate in candidates for network in self.networks
                   if candidate.version == network.version)  # fmt: skip


EVERYTHING = Allowlist(everything=True)


@lru_cache(maxsize=16)
def parse_allowlist(text: str) -> Allowlist:
    """PARLEY_PRIVATE_NETWORKS_ALLOWED as an `Allowlist`: an entry that is not a CIDR or address is a host name."""
    networks: list[IPNetwork] = []
    hosts: set[str] = set()
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            hosts.add(normal_host(entry))
    return Allowlist(networks=tuple(networks), hosts=frozenset(hosts))


def normal_host(host: str) -> str:
    """A host name as the allowlist compares it: lower case, no trailing dot, no IPv6 brackets."""
    return host.strip().strip("[]").rstrip(".").lower()


def forbidden_reason(address: IPAddress) -> str | None:
    """Why `address` is not one to connect to (e.g. "loopback"), or None for a global unicast address."""
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


def check_host(host: str, addresses: list[str], allowed: Allowlist, *, purpose: str,
               reason_of: Callable[[IPAddress], str | None] = forbidden_reason) -> None:  # fmt: skip
    """Raise PrivateAddress when any of `host`'s `addresses` is not public and not allowed.

    `purpose` ends the message ("http_get fetches public addresses only"); `reason_of` is the check
    (its caller's, so a test may replace it there).
    """
    for text in addresses:
        address = ipaddress.ip_address(text.partition("%")[0])
        reason = reason_of(address)
        if reason and not allowed.allows(host, address):
            shown = host if normal_host(host) == text else f"{host} resolves to {text}, which"
            article = "an" if reason[0] in "aeiouAEIOU" else "a"
            raise PrivateAddress(f"refused: {shown} is {article} {reason} address; {purpose}")


def _addresses(infos: list[tuple[object, ...]], host: str) -> list[str]:
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))  # type: ignore[index]
    if not addresses:
        raise Unresolvable(f"{host!r} has no address")
    return addresses


def resolve(host: str, port: int) -> list[str]:
    """Every address of `host` (blocking: `socket.getaddrinfo`)."""
    try:
        infos = socket.getaddrinfo(normal_host(host), port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise Unresolvable(f"cannot resolve {host!r}: {error}") from error
    return _addresses(list(infos), host)


async def resolve_async(host: str, port: int) -> list[str]:
    """Every address of `host`, without blocking the event loop (the loop's resolver)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(normal_host(host), port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise Unresolvable(f"cannot resolve {host!r}: {error}") from error
    return _addresses(list(infos), host)
