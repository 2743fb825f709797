-- ADMIT_REPORT (web, POST /sessions/{id}/summary): queue a summary report within the chat routes'
-- limits (lib_limits.lua, the in-flight counter only read) and the tenant's daily budget (lib_budget.lua), one
-- report per session at a time.
-- uses: limits, budget
-- KEYS: 1 rq_queue, 2 inflight, 3 rate, 4 summary_report, 5 rq_job, 6 budget_spent
-- ARGV: 1 max_queue_depth, 2 max_inflight, 3 max_rate, 4 rate_window_ms, 5 job_id, 6 lock_ttl_ms, 7 enqueued_at, 8 budget
-- KEYS are keys.<name> (inflight: the tenant's turns in flight; rate: the API key's rate counter;
-- summary_report: the session's report lock; rq_job: the report's RQ job hash).
-- Arguments: max_inflight (per tenant), max_rate (turns per key per window): 0 = no limit; enqueued_at: RQ's text time;
-- budget: the tenant's tokens per day ('' = none; budget_spent: keys.budget_spent(tenant, today)).
-- Returns {'admitted', ''} | {'budget_exceeded', tokens spent today} | {'queue_full', ''} | {'busy', ''} |
-- {'rate_limited', ms until the window ends} | {'running', ''}. Nothing is written unless admitted;
-- then the lock, the key's rate count and the job's place in RQ's queue are written together.
local refused = over_budget(KEYS[6], ARGV[8]) or over_limits(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3])
if refused then
    return refused
end
if redis.call('EXISTS', KEYS[4]) == 1 then
    return {'running', ''}
end
redis.call('SET', KEYS[4], ARGV[5], 'PX', ARGV[6])
count_rate(KEYS[3], ARGV[3], ARGV[4])
redis.call('PERSIST', KEYS[5])
redis.call('HSET', KEYS[5], 'status', 'queued', 'enqueued_at', ARGV[7])
redis.call('RPUSH', KEYS[1], ARGV[5])
return {'admitted', ''}
