"""The check every URL a tenant gives for Parley to call (MCP servers, webhooks, A2A push configs) passes when it
is registered: its host resolves, and to no private address the operator did not allow
(PARLEY_PRIVATE_NETWORKS_ALLOWED). The callers check again, pinned, at every request they make."""

from __future__ import annotations

import httpx

from parley.shared.errors import PrivateNetwork, UnresolvableHost
from parley.tools import network

from ..runtime import WebRuntime


async def check_public_url(rt: WebRuntime, url: str, *, purpose: str, field: str | None = None) -> None:
    """422 (`private_network`, `unresolvable_host`, naming `field` when given) for a URL Parley may not call."""
    parsed = httpx.URL(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    where = {"field": field} if field else {}
    try:
        addresses = await network.resolve_async(parsed.host, port)
        network.check_host(parsed.host, addresses, network.parse_allowlist(rt.settings.private_networks_allowed),
                           purpose=purpose)  # fmt: skip
    except network.PrivateAddress as error:
        raise PrivateNetwork(str(error), **where) from None
    except network.Unresolvable as error:
        raise UnresolvableHost(str(error), **where) from None
