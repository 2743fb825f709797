"""OpenAI-compatible `/v1/chat/completions` and `/v1/models`: any OpenAI client talks to an agent
by changing only its base URL, key and model name (the agent's name or id).

With a session (`X-Parley-Session` header, else the `user` field) the agent answers from that
session's memory in Redis and only the request's last user message (or its trailing tool results)
is new; without one, the request's messages are the whole conversation and nothing is stored.
Either way the turn goes through the same queue and workers as `/api/v1/chat`. A request's own
`tools` are offered to the model beside the agent's; a call of one ends the answer with
`tool_calls`, which the client runs. docs/openai.md lists the fields honoured, ignored and refused.
"""
