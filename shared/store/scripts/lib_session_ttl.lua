-- A session's lifetime (its agent's `session_ttl_s`, docs in shared/store/sessions.py): push its expiry forward.
-- While a turn of it is in its lane, its keys have no Redis TTL (a queued, running or waiting turn keeps it,
-- however long it waits); once the lane is empty, each of its keys expires ttl_ms from now. Either way the
-- deployment-wide zset `expiries` holds the session (`member`) at its expiry, for the worker's sweeper, and the
-- hash's `expires_at` says when (the sweeper's check that the session was not made again since).
-- ttl_ms 0 (the agent keeps its sessions): no TTL, no expiry.
local function keep_session(expiries_key, member, session_key, lane_key, session_keys, ttl_ms, now_ms)
    local ttl = tonumber(ttl_ms) or 0
    if redis.call('EXISTS', session_key) == 0 then
        return
    end
    if ttl <= 0 then
        for _, key in ipairs(session_keys) do
            redis.call('PERSIST', key)
        end
        redis.call('HDEL', session_key, 'expires_at')
        redis.call('ZREM', expiries_key, member)
        return
    end
    local expires_at = tonumber(now_ms) + ttl
    redis.call('HSET', session_key, 'expires_at', expires_at)
    redis.call('ZADD', expiries_key, expires_at, member)
    local busy = redis.call('LLEN', lane_key) > 0
    for _, key in ipairs(session_keys) do
        if busy then
            redis.call('PERSIST', key)
        else
            redis.call('PEXPIRE', key, ttl)
        end
    end
end
