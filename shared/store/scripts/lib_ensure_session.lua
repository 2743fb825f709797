-- Create the session unless it exists; the agent's first message becomes message 0.
-- Returns the agent id the session is bound to, and 1 when it was created here.
local function ensure_session(session_key, sessions_key, agent_sessions_key, messages_key,
                              session_id, agent_id, now_ms, metadata, first_message_json)
    local bound = redis.call('HGET', session_key, 'agent_id')
    if bound then
        return bound, 0
    end
    redis.call('HSET', session_key, 'agent_id', agent_id, 'created_at', now_ms,
               'metadata', metadata, 'exchanges', 0)
    redis.call('ZADD', sessions_key, now_ms, session_id)
    redis.call('ZADD', agent_sessions_key, now_ms, session_id)
    if first_message_json ~= '' then
        redis.call('RPUSH', messages_key, first_message_json)
    end
    return agent_id, 1
end
