-- CLAIM_SCHEDULE (worker, its firing loop): lease one due schedule to this process, for one firing.
-- KEYS: 1 due, 2 schedule
-- ARGV: 1 member, 2 now_ms, 3 lease_ms
-- due: keys.schedules_due; schedule: keys.schedule of the member; member: '<tenant> <schedule id>'.
-- A member is due when its score is at most now_ms. Claiming moves its score to now_ms + lease_ms, so no other
-- process claims it before the lease ends; if this one dies before ADVANCE_SCHEDULE, another claims the same
-- scheduled time then, and the firing's Idempotency-Key (the schedule id and that time) makes its turn the one
-- the first process may have accepted already.
-- Returns {'claimed', next_run_at (the scheduled time being fired, ms)}; {'not_due'} (not yet time, or another
-- process holds the lease); {'gone'} (deleted or stopped: the member is taken out of due).
-- Run twice: the second run finds the first one's lease and answers 'not_due'; the firing waits for the lease.
local now_ms = tonumber(ARGV[2])
local lease_ms = tonumber(ARGV[3])
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then
    return {'gone'}
end
if tonumber(score) > now_ms then
    return {'not_due'}
end
local next_run_at = redis.call('HGET', KEYS[2], 'next_run_at')
if not next_run_at or next_run_at == '' then
    redis.call('ZREM', KEYS[1], ARGV[1])
    return {'gone'}
end
redis.call('ZADD', KEYS[1], now_ms + lease_ms, ARGV[1])
return {'claimed', next_run_at}
