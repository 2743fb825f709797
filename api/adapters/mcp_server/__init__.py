"""Parley as an MCP server (`/mcp`, Streamable HTTP): each agent the key can see is a tool, a call is a turn
(issue 15; docs/protocols.md)."""
