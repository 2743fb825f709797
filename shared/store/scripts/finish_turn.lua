-- FINISH_TURN (worker, or web for a cancel): end a turn exactly once, recording telemetry in the same step.
-- Records the outcome, commits its messages, images and pending notes (only when finished), emits its
-- last events (ending with `done`), gives back its place (admitted or in the tenant's line), leaves the
-- lane (the steer requests still waiting for it, keys.steers, join the lane right behind it: they become the
-- next turns), makes the lane's next turn ready and admits turns from the tenant's line while the tenant has
-- free places. Its tool runs expire with the job. When the tenant has webhooks, the end goes into the turn-ends
-- stream (lib_turn_end.lua: `turn.<status>`).
-- uses: emit, decode, tenant_line, telemetry, turn_end, replace, session_ttl, usage
-- KEYS: 1 job, 2 events, 3 live_channel, 4 lane, 5 messages, 6 session, 7 rq_queue, 8 rq_job, 9 inflight, 10 session_images, 11 tenant_admitted, 12 tenant_line, 13 tool_runs, 14 pending_notes, 15 notes, 16 steers, 17 webhooks, 18 turn_ends, 19 session_expiries, 20 usage_day, 21 usage_agents, 22 usage_sessions, 23.. metrics
-- ARGV: 1 job_id, 2 status, 3 now_ms, 4 attempt, 5 result, 6 error, 7 error_code, 8 new_messages, 9 last_events, 10 retention_ms, 11 rq_prefix, 12 enqueued_at, 13 images, 14 tokens, 15 tenant_cap, 16 job_prefix, 17 max_notes, 18 call_id, 19 deltas, 20 usage, 21 usage_cap, 22 usage_expire_at
-- KEYS are keys.<name> (inflight: the tenant's turns in flight; webhooks: the tenant's, keys.webhooks; turn_ends:
-- keys.turn_ends(); usage_*: keys.usage_day, usage_agents, usage_sessions of the day the turn ends; metrics: the
-- metric hashes, lib_telemetry.lua).
-- The job hash's own fields say more: `regenerate` ('1': the answer replaces the old answer to the session's
--   last user message, lib_replace.lua), `session_ttl_ms` and `expiry_member` (lib_session_ttl.lua).
-- A committed note is stored as JSON {text, upto}: upto is the session's message count once the turn committed
--   (a fork keeps the notes of the turns it holds).
-- Arguments: status: the final one (finished|failed|canceled); attempt: '' = whichever; result: JSON ('' = none);
--   new_messages: JSON array of message JSON strings; last_events: JSON array of event JSON strings;
--   rq_prefix: RQ's job key prefix; enqueued_at: RQ's text time; images: JSON object ref -> data URI
--   ('' = none); tokens: the messages' tokens (added to the session's unsummarised `tokens`); tenant_cap:
--   the tenant's cap of admitted turns (0 = no cap); job_prefix: keys.job(tenant, ''); max_notes: how many
--   notes a session keeps; call_id names this call (its retry is answered first, below); deltas: the
--   process's buffered metric deltas; usage: the turn's counts for its tenant's usage (JSON, lib_usage.lua; '' = this
--   end is not counted: the worker counts the turns it ends finished or failed after calling the model),
--   usage_cap: PARLEY_USAGE_MAX_GROUPS_PER_DAY, usage_expire_at: when the day's counters expire (ms).
-- Returns 1 when this call ended the turn, 0 when it had already ended (or another attempt runs).
-- A bad argument raises before any write: the turn stays as it was, and may be ended again.
-- In three parts, in this order:
-- 1. Run twice: this call ran already and ended the turn (its reply was lost and the client sent it
--    again): the same answer, and nothing is written, telemetry neither.
local state = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'finish_call')  -- read once, for both parts
if state[3] == ARGV[18] then
    return 1
end
local metrics = {unpack(KEYS, 23)}
local deltas = cjson.decode(ARGV[19])  -- before the step writes: bad deltas write nothing

-- 2. The step.
local function finish()
    local status, attempt = state[1], state[2]
    if not status or status == 'finished' or status == 'failed' or status == 'canceled' then
        return 0
    end
    if ARGV[4] ~= '' and (status ~= 'started' or attempt ~= ARGV[4]) then
        return 0
    end
    local final = ARGV[2]
    if final ~= 'finished' and final ~= 'failed' and final ~= 'canceled' then
        error('bad argument: unknown final status')
    end
    local messages = decode_strings(ARGV[8], 'messages')
    local payloads = decode_strings(ARGV[9], 'events')
    local images = {}
    if ARGV[13] ~= '' then
        images = decode_strings(ARGV[13], 'images', true)
    end
    local tokens, cap, max_notes = tonumber(ARGV[14]) or 0, tonumber(ARGV[15]), tonumber(ARGV[17])
    if not cap or not max_notes then
        error('bad argument: the tenant cap and the notes kept must be numbers')
    end
    local usage = usage_decode(ARGV[20], ARGV[21], ARGV[22])
    -- Every check passed: from here on, only writes.
    if final == 'finished' and redis.call('EXISTS', KEYS[6]) == 1 then
        if redis.call('HGET', KEYS[1], 'regenerate') == '1' then
            local replaced, replaced_tokens = replace_answer(KEYS[5])
            if replaced > 0 then
                redis.call('HINCRBY', KEYS[6], 'replaced', replaced)
                redis.call('HINCRBY', KEYS[6], 'exchanges', -1)  -- the new answer counts in its place
                if redis.call('HINCRBY', KEYS[6], 'tokens', -replaced_tokens) < 0 then
                    redis.call('HSET', KEYS[6], 'tokens', 0)
                end
            end
        end
        for _, message in ipairs(messages) do
            redis.call('RPUSH', KEYS[5], message)
        end
        for ref, uri in pairs(images) do
            redis.call('HSETNX', KEYS[10], ref, uri)  -- stored once, however many turns send it
        end
        redis.call('HINCRBY', KEYS[6], 'exchanges', 1)
        redis.call('HINCRBY', KEYS[6], 'tokens', tokens)
        local notes = redis.call('LRANGE', KEYS[14], -max_notes, -1)  -- older ones would be trimmed anyway
        if #notes > 0 then
            local upto = redis.call('LLEN', KEYS[5])
            for _, note in ipairs(notes) do
                redis.call('RPUSH', KEYS[15], cjson.encode({text = note, upto = upto}))
            end
            redis.call('LTRIM', KEYS[15], -max_notes, -1)
        end
    end
    redis.call('DEL', KEYS[14])  -- a turn that did not finish in a session keeps none of its notes
    redis.call('PEXPIRE', KEYS[13], ARGV[10])
    redis.call('HSET', KEYS[1], 'status', final, 'ended_at', ARGV[3], 'result', ARGV[5],
               'error', ARGV[6], 'error_code', ARGV[7], 'finish_call', ARGV[18])
    redis.call('PEXPIRE', KEYS[1], ARGV[10])  -- kept as long as its events: retention counts from the end
    for _, payload in ipairs(payloads) do
        emit(KEYS[2], KEYS[3], payload, ARGV[10])
    end
    if final == 'canceled' and status == 'queued' then
        -- Not started yet (in RQ's queue, in the tenant's line or deferred in its lane): no worker
        -- may pick it up, and nothing else will ever end RQ's record of it, so it expires.
        redis.call('LREM', KEYS[7], 0, ARGV[1])
        redis.call('HSET', KEYS[8], 'status', 'canceled')
        redis.call('PEXPIRE', KEYS[8], ARGV[10])
    end
    release_place(KEYS[11], KEYS[12], KEYS[1], ARGV[1])
    if redis.call('DECR', KEYS[9]) < 0 then
        redis.call('SET', KEYS[9], 0)
    end
    local steers = redis.call('LRANGE', KEYS[16], 0, -1)
    if #steers > 0 then
        redis.call('DEL', KEYS[16])
        for position = #steers, 1, -1 do
            if redis.call('LINSERT', KEYS[4], 'AFTER', ARGV[1], steers[position]) < 0 then
                redis.call('RPUSH', KEYS[4], steers[position])  -- (not in its lane: cannot happen, but never lost)
            end
        end
    end
    redis.call('LREM', KEYS[4], 1, ARGV[1])
    local ttl_ms, member = unpack(redis.call('HMGET', KEYS[1], 'session_ttl_ms', 'expiry_member'))
    if member then  -- the session's turns push its expiry forward (lib_session_ttl.lua)
        keep_session(KEYS[19], member, KEYS[6], KEYS[4], {KEYS[6], KEYS[5], KEYS[15], KEYS[10]}, ttl_ms, ARGV[3])
    end
    local head = redis.call('LINDEX', KEYS[4], 0)
    if head then
        local head_key, head_rq_key = ARGV[16] .. head, ARGV[11] .. head
        -- Only a head that holds nothing yet: it may already be admitted or in the line.
        if redis.call('HGET', head_rq_key, 'status') == 'deferred' and not redis.call('HGET', head_key, 'place') then
            make_ready(KEYS[11], KEYS[12], KEYS[7], head_key, head_rq_key, head, cap, ARGV[12])
        end
    end
    fill_from_line(KEYS[11], KEYS[12], KEYS[7], ARGV[16], ARGV[11], cap, ARGV[12])
    record_turn_end(KEYS[17], KEYS[18], KEYS[1], ARGV[1], 'turn.' .. final)
    if usage then
        record_usage(KEYS[20], KEYS[21], KEYS[22], KEYS[1], usage, ARGV[21], ARGV[22])
    end
    return 1
end
local result = finish()

-- 3. Telemetry: the buffered deltas, and, when this call ended the turn, its outcome and its time
-- since acceptance.
metric_apply(metrics, deltas)
if result == 1 then
    local labels = '["' .. ARGV[2] .. '"]'
    metric_add(metrics, METRIC.parley_jobs, labels, 1)
    local enqueued = redis.call('HGET', KEYS[1], 'enqueued_at')
    if enqueued then
        metric_observe(metrics, METRIC.parley_turn_seconds, labels, (tonumber(ARGV[3]) - tonumber(enqueued)) / 1000)
    end
end
return result
