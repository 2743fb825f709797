-- Append one event to a job's stream, keep the stream for ttl_ms, and publish it live as
-- "<entry id> <json>". The stream entry id is the SSE event id.
local function emit(stream, channel, payload, ttl_ms)
    local id = redis.call('XADD', stream, '*', 'e', payload)
    redis.call('PEXPIRE', stream, ttl_ms)
    redis.call('PUBLISH', channel, id .. ' ' .. payload)
    return id
end
