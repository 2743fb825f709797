"""A2A 1.0 (and the 0.3 method names): each agent's card and JSON-RPC endpoint; a task is a turn, `contextId` a
session, an approval wait `input-required` (issue 15; docs/protocols.md)."""
