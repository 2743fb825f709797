-- The chat routes' limits, checked before anything is written (accept_turn.lua and the summary's
-- admit_report.lua): the whole queue's depth, the tenant's turns in flight, the API key's
-- rate. Returns nil when all allow, else {'queue_full', ''} | {'busy', ''} |
-- {'rate_limited', ms until the key's window ends}.
local function over_limits(queue, inflight, rate, max_depth, max_inflight, max_rate)
    if redis.call('LLEN', queue) >= tonumber(max_depth) then
        return {'queue_full', ''}
    end
    if tonumber(max_inflight) > 0 and tonumber(redis.call('GET', inflight) or '0') >= tonumber(max_inflight) then
        return {'busy', ''}
    end
    if tonumber(max_rate) > 0 and tonumber(redis.call('GET', rate) or '0') >= tonumber(max_rate) then
        return {'rate_limited', tostring(redis.call('PTTL', rate))}
    end
    return nil
end
-- Count one admitted request against the key's rate window, which starts with its first one.
local function count_rate(rate, max_rate, window_ms)
    if tonumber(max_rate) > 0 and redis.call('INCR', rate) == 1 then
        redis.call('PEXPIRE', rate, window_ms)
    end
end
