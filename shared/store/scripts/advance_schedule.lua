-- ADVANCE_SCHEDULE (worker, after a firing): record the firing and move the schedule to its next run, once.
-- KEYS: 1 schedule, 2 due, 3 firings
-- ARGV: 1 member, 2 scheduled_ms, 3 next_run_ms, 4 now_ms, 5 job_id, 6 error, 7 outcome
-- schedule: keys.schedule; due: keys.schedules_due; firings: the parley_schedule_firings counter's hash
-- (keys.metric); member: '<tenant> <schedule id>'; scheduled_ms: the next_run_at CLAIM_SCHEDULE answered;
-- next_run_ms: the run after it ('' stops the schedule: error says why); job_id: the firing's turn ('' when no
-- turn ran); error: why no turn ran ('' when one did); outcome: the counter's field (its labels, JSON).
-- Only the first process to advance a scheduled time writes: the counter counts each firing once.
-- Returns 'advanced'; 'moved' (this scheduled time was advanced already: nothing written); 'gone' (deleted
-- meanwhile: the member is taken out of due).
-- Run twice: the first run moved next_run_at, so the second answers 'moved' and writes nothing.
local next_run_ms = ARGV[3]
if next_run_ms ~= '' and not tonumber(next_run_ms) then
    return redis.error_reply('next_run_ms is not a number')
end
if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('ZREM', KEYS[2], ARGV[1])
    return 'gone'
end
if redis.call('HGET', KEYS[1], 'next_run_at') ~= ARGV[2] then
    return 'moved'
end
redis.call('HSET', KEYS[1], 'next_run_at', next_run_ms, 'last_run_at', ARGV[4], 'last_error', ARGV[6])
if ARGV[5] ~= '' then
    redis.call('HSET', KEYS[1], 'last_job_id', ARGV[5])
    redis.call('HINCRBY', KEYS[1], 'runs', 1)
end
if next_run_ms == '' then
    redis.call('HSET', KEYS[1], 'stopped_reason', ARGV[6])
    redis.call('ZREM', KEYS[2], ARGV[1])
else
    redis.call('ZADD', KEYS[2], next_run_ms, ARGV[1])
end
redis.call('HINCRBY', KEYS[3], ARGV[7], 1)
return 'advanced'
