-- Append one event to a job's stream and publish it live as "<entry id> <json>". The stream entry id is
-- the SSE event id. `append` leaves the stream's lifetime as it is (EMIT_TURN_EVENT: START_TURN set it);
-- `emit` also keeps the stream for ttl_ms.
local function append(stream, channel, payload)
    local id = redis.call('XADD', stream, '*', 'e', payload)
    redis.call('PUBLISH', channel, id .. ' ' .. payload)
    return id
end

local function emit(stream, channel, payload, ttl_ms)
    local id = append(stream, channel, payload)
    redis.call('PEXPIRE', stream, ttl_ms)
    return id
end
