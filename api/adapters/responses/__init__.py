"""OpenAI's Responses API (the Open Responses spec, with background mode) and Conversations over Parley's turns
and sessions: a response is a turn (job), a conversation is a session (issue 15; docs/protocols.md)."""
