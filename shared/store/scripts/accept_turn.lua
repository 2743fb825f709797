-- ACCEPT_TURN (web): queue a turn. Checks the limits, creates the session if needed, records the job,
-- emits `session` and `status: queued`, joins the session's lane and, at its head, the tenant's line.
-- uses: emit, limits, budget, ensure_session, decode, tenant_line, session_ttl
-- KEYS: 1 session, 2 sessions, 3 agent_sessions, 4 messages, 5 lane, 6 job, 7 events, 8 live_channel, 9 idempotency, 10 rq_job, 11 rq_queue, 12 inflight, 13 rate, 14 tenant_admitted, 15 tenant_line, 16 notes, 17 session_images, 18 session_expiries, 19 budget_spent
-- ARGV: 1 job_id, 2 session_id, 3 agent_id, 4 now_ms, 5 metadata, 6 first_message, 7 job_fields, 8 session_event, 9 queued_event, 10 retention_ms, 11 idempotency_value, 12 idempotency_ttl_ms, 13 max_queue_depth, 14 enqueued_at, 15 max_inflight, 16 max_rate, 17 rate_window_ms, 18 create_session, 19 tenant_cap, 20 job_prefix, 21 rq_prefix, 22 on_busy, 23 steers_prefix, 24 budget
-- KEYS are keys.<name> (idempotency: keys.idempotency(tenant, '-') when the request has no key; inflight: the
-- tenant's turns in flight; rate: the API key's rate counter).
-- job_fields may hold `session_ttl_ms` and `expiry_member`: the turn keeps its session (lib_session_ttl.lua).
-- Arguments: metadata, first_message: the session's, as CREATE_SESSION takes them; job_fields: the job hash
--   (JSON object of strings); session_event, queued_event: event JSON; idempotency_value: '' = no key;
--   max_queue_depth, max_inflight (per tenant, 0 = no limit), max_rate (turns per key per window,
--   0 = no limit): the limits; enqueued_at: RQ's text time; create_session: '1' to create the session if
--   missing, '0' for a turn that brings its own history (no session is created, so nothing is committed:
--   OpenAI-style stateless calls); tenant_cap: the tenant's cap of admitted turns (0 = no cap);
--   job_prefix: keys.job(tenant, ''); rq_prefix: RQ's job key prefix; on_busy: what to do when the session's
--   lane holds a turn (its head) already: 'enqueue' (join the lane's end), 'reject' (refuse, write nothing),
--   'interrupt' (join the lane right after the head: the caller then cancels the head, so this turn runs
--   next), 'steer' (the job waits in the head's steers list, keys.steers = steers_prefix .. head, and the
--   head is flagged `steers`: its worker moves it into the turn before a model call (TAKE_STEERS), or
--   FINISH_TURN makes it the next turn); steers_prefix: keys.steers(tenant, '');
--   budget_spent: keys.budget_spent(tenant, today); budget: the tenant's tokens per UTC day ('' = no budget):
--   at or over it (the counter's value), the turn is refused.
-- Returns {'accepted', job_id} (and, with a head that on_busy acted on, 'interrupt' or 'steer' and the head's
--         id) | {'existing', idempotency value} | {'queue_full', ''} | {'busy', ''} |
--         {'rate_limited', ms until the window ends} | {'conflict', bound agent id} | {'session_busy', head} |
--         {'budget_exceeded', tokens spent today}.
-- Nothing is written unless the answer is 'accepted' (a bad argument raises before any write).
-- Run twice with the same job id (a client retry after a dropped connection), it accepts once (and answers
-- again what on_busy did, from the job's `steer_of` / `interrupts`).
if redis.call('EXISTS', KEYS[6]) == 1 then
    local acted = redis.call('HMGET', KEYS[6], 'steer_of', 'interrupts')
    if acted[1] then
        return {'accepted', ARGV[1], 'steer', acted[1]}
    elseif acted[2] then
        return {'accepted', ARGV[1], 'interrupt', acted[2]}
    end
    return {'accepted', ARGV[1]}
end
if ARGV[11] ~= '' then
    local existing = redis.call('GET', KEYS[9])
    if existing then
        return {'existing', existing}
    end
end
local refused = over_budget(KEYS[19], ARGV[24])
    or over_limits(KEYS[11], KEYS[12], KEYS[13], ARGV[13], ARGV[15], ARGV[16])
if refused then
    return refused
end
local bound = redis.call('HGET', KEYS[1], 'agent_id')
if bound and bound ~= ARGV[3] then
    return {'conflict', bound}
end
local fields = decode_strings(ARGV[7], 'job fields', true)
local cap = tonumber(ARGV[19])
if not cap then
    error('bad argument: the tenant cap is not a number')
end
local on_busy = ARGV[22]
if on_busy ~= 'enqueue' and on_busy ~= 'reject' and on_busy ~= 'interrupt' and on_busy ~= 'steer' then
    error('bad argument: unknown on_busy')
end
local head = redis.call('LINDEX', KEYS[5], 0)
if head and on_busy == 'reject' then
    return {'session_busy', head}
end
-- Every check passed: from here on, only writes.
if ARGV[18] == '1' then
    ensure_session(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
end
for name, value in pairs(fields) do
    redis.call('HSET', KEYS[6], name, value)
end
redis.call('PEXPIRE', KEYS[6], ARGV[10])
emit(KEYS[7], KEYS[8], ARGV[8], ARGV[10])
emit(KEYS[7], KEYS[8], ARGV[9], ARGV[10])
redis.call('PERSIST', KEYS[10])
local acted = nil
if head and on_busy == 'steer' then
    redis.call('HSET', KEYS[6], 'steer_of', head)
    redis.call('RPUSH', ARGV[23] .. head, ARGV[1])
    redis.call('HSET', ARGV[20] .. head, 'steers', '1')
    acted = 'steer'
elseif head and on_busy == 'interrupt' then
    redis.call('LINSERT', KEYS[5], 'AFTER', head, ARGV[1])
    redis.call('HSET', KEYS[6], 'interrupts', head)
    acted = 'interrupt'
else
    redis.call('RPUSH', KEYS[5], ARGV[1])
    if redis.call('LINDEX', KEYS[5], 0) == ARGV[1] then
        make_ready(KEYS[14], KEYS[15], KEYS[11], KEYS[6], KEYS[10], ARGV[1], cap, ARGV[14])
    end
end
if fields['expiry_member'] then  -- the lane holds a turn now (or a steer waits on its head): no expiry meanwhile
    keep_session(KEYS[18], fields['expiry_member'], KEYS[1], KEYS[5], {KEYS[1], KEYS[4], KEYS[16], KEYS[17]},
                 fields['session_ttl_ms'], ARGV[4])
end
fill_from_line(KEYS[14], KEYS[15], KEYS[11], ARGV[20], ARGV[21], cap, ARGV[14])  -- after a raised cap
if ARGV[11] ~= '' then
    redis.call('SET', KEYS[9], ARGV[11], 'PX', ARGV[12])
end
redis.call('INCR', KEYS[12])
count_rate(KEYS[13], ARGV[16], ARGV[17])
if acted then
    return {'accepted', ARGV[1], acted, head}
end
return {'accepted', ARGV[1]}
