"""Protocol adapters: other APIs' shapes over Parley's own service (`api/service/`).

One package per protocol, each a `routes.py` (parse, call the service, shape the answer) and a
`translate.py` (the protocol's models and its mapping to and from Parley's, without I/O):
`openai/` (`/v1/chat/completions`, `/v1/models`), `responses/` (`/v1/responses`, `/v1/conversations`),
`mcp_server/` (`/mcp`), `a2a/` (`/a2a/{agent}`) and `seed/` (the seed article's `/agents/...`).
Parley's own `/api/v1` routes are in `api/routes/`.
"""
