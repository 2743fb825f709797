"""The seed article's `/agents/...` routes, as views over the same agents, sessions and memory.

Shapes follow the article: an agent is `{id, context, first_message, response_shape, instructions,
timestamp, conversations}`, a conversation `{id, agent_id, timestamp}`, and a message one
exchange `{id, user_message, agent_message, timestamp, conversation_id}`.
"""
