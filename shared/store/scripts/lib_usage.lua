-- usage (snippet): a turn's usage added to its tenant's counters of the day (keys.usage_day, usage_agents,
-- usage_sessions), in the step that ends the turn, so a turn is counted once, whatever process dies and however
-- often the call is run again (shared/usage.py says what a turn adds; shared/store/usage.py reads them back).
-- usage: {turns, prompt_tokens, completion_tokens, cached_tokens, cost} of whole numbers (cost: micro-units);
-- cap: most agents, and most sessions, the day keeps apart (a later one that day counts under '(other)');
-- expire_at: when the day's counters go (ms). Fields by group: '<agent or session id>|<counter>'.
local USAGE_COUNTERS = {'turns', 'prompt_tokens', 'completion_tokens', 'cached_tokens', 'cost'}
local USAGE_OTHER = '(other)'

-- The usage argument decoded and checked ('' = this end is not counted: nil); raises on a bad one, so it
-- is called before the step's first write.
local function usage_decode(text, cap, expire_at)
    if text == '' then
        return nil
    end
    local ok, usage = pcall(cjson.decode, text)
    if not ok or type(usage) ~= 'table' then
        error('bad argument: usage must be a JSON object')
    end
    for _, name in ipairs(USAGE_COUNTERS) do
        local n = usage[name]
        if type(n) ~= 'number' or n < 0 or n ~= math.floor(n) then
            error('bad argument: usage.' .. name .. ' must be a whole number')
        end
    end
    if not tonumber(cap) or not tonumber(expire_at) then
        error('bad argument: the usage cap and expiry must be numbers')
    end
    return usage
end

-- The field prefix a group counts under: its own while the day keeps fewer than `cap` groups apart
-- (every group writes all its counters, so the hash holds #USAGE_COUNTERS fields per group).
local function usage_group(key, group, cap)
    if redis.call('HEXISTS', key, group .. '|turns') == 0
        and redis.call('HLEN', key) >= cap * #USAGE_COUNTERS then
        group = USAGE_OTHER
    end
    return group .. '|'
end

local function usage_add(key, prefix, usage, expire_at)
    for _, name in ipairs(USAGE_COUNTERS) do
        redis.call('HINCRBY', key, prefix .. name, usage[name])
    end
    redis.call('PEXPIREAT', key, expire_at)
end

-- `usage` added to the day's totals and to the groups of `agent_id` and `session_id`.
local function record_group_usage(day_key, agents_key, sessions_key, agent_id, session_id, usage, cap, expire_at)
    cap, expire_at = tonumber(cap), tonumber(expire_at)
    usage_add(day_key, '', usage, expire_at)
    usage_add(agents_key, usage_group(agents_key, agent_id or '', cap), usage, expire_at)
    usage_add(sessions_key, usage_group(sessions_key, session_id or '', cap), usage, expire_at)
end

-- A turn's usage, under the agent and session its job record names.
local function record_usage(day_key, agents_key, sessions_key, job_key, usage, cap, expire_at)
    local agent_id, session_id = unpack(redis.call('HMGET', job_key, 'agent_id', 'session_id'))
    record_group_usage(day_key, agents_key, sessions_key, agent_id, session_id, usage, cap, expire_at)
end
