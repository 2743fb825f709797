-- DECIDE_APPROVAL (web, or a worker for a wait that timed out): record a person's decision on a waiting turn's
-- tool call. Emits `status: decided` for it; once every pending call is decided, the turn goes on: it is
-- `queued` again (flagged `resume`, so START_TURN says `resumed`), its RQ job written afresh (the paused run
-- ended it in RQ's eyes, and its record may have expired during the wait) and made ready as a lane head is
-- (admitted, or into the tenant's line), and its deadline leaves the approval deadlines.
-- uses: emit, tenant_line
-- KEYS: 1 job, 2 events, 3 live_channel, 4 rq_job, 5 rq_queue, 6 tenant_admitted, 7 tenant_line, 8 deadlines, 9 rq_finished
-- ARGV: 1 job_id, 2 call_id, 3 approve, 4 reason, 5 member, 6 tenant_cap, 7 enqueued_at, 8 keep_ms, 9 now_ms, 10.. rq_fields
-- KEYS are keys.<name> (deadlines: keys.approval_deadlines(); rq_finished: RQ's finished-job registry of the
-- queue, which the paused run entered). call_id: the call decided ('' = every call not decided yet: a wait
-- that timed out); approve: '1' or '0'; reason: told to the model with a denial ('' = none); member:
-- `<tenant> <job id>`; tenant_cap: 0 = no cap; enqueued_at: RQ's text time; keep_ms: the events stream's
-- lifetime from now; now_ms: the time (the sweep decides only a wait whose deadline passed); rq_fields: the
-- RQ job's hash as field, value, ... (Job.to_dict of a fresh job with the turn's id).
-- Returns {'missing', ''} | {'not_waiting', status} | {'unknown', ''} (no such pending call) |
--         {'decided', ''} (decided already) | {'recorded', calls still undecided} | {'resumed', '0'} |
--         {'not_due', ''} (the sweep, for a turn that waits again with a later deadline). The sweep (call_id '')
--         also drops the deadline of a turn that no longer waits (canceled, gone), in the same step.
-- Run twice (a lost reply), the second run answers 'decided' or 'not_waiting' and writes nothing.
local cap = tonumber(ARGV[6])
if not cap or not tonumber(ARGV[8]) or not tonumber(ARGV[9]) or (#ARGV - 9) % 2 ~= 0 then
    error('bad argument: the tenant cap, keep_ms and now_ms must be numbers, the RQ fields come in pairs')
end
local status = redis.call('HGET', KEYS[1], 'status')
local sweep = ARGV[2] == ''
if sweep and status ~= 'waiting' then
    redis.call('ZREM', KEYS[8], ARGV[5])
end
if not status then
    return {'missing', ''}
end
if status ~= 'waiting' then
    return {'not_waiting', status}
end
if sweep and tonumber(redis.call('HGET', KEYS[1], 'waiting_until') or '0') > tonumber(ARGV[9]) then
    return {'not_due', ''}
end
local pending = cjson.decode(redis.call('HGET', KEYS[1], 'pending') or '[]')
local stored = redis.call('HGET', KEYS[1], 'decisions')
local decisions = stored and cjson.decode(stored) or {}
local targets = {}
if sweep then
    for _, call in ipairs(pending) do
        if decisions[call.call_id] == nil then
            table.insert(targets, call.call_id)
        end
    end
else
    local known = false
    for _, call in ipairs(pending) do
        if call.call_id == ARGV[2] then
            known = true
        end
    end
    if not known then
        return {'unknown', ''}
    end
    if decisions[ARGV[2]] ~= nil then
        return {'decided', ''}
    end
    targets = {ARGV[2]}
end
-- Every check passed: from here on, only writes.
local approve = ARGV[3] == '1'
for _, call_id in ipairs(targets) do
    decisions[call_id] = {approve = approve, reason = ARGV[4]}
    emit(KEYS[2], KEYS[3], cjson.encode({type = 'status', message = 'decided', call_id = call_id,
                                          approve = approve}), ARGV[8])
end
redis.call('HSET', KEYS[1], 'decisions', cjson.encode(decisions))
local left = 0
for _, call in ipairs(pending) do
    if decisions[call.call_id] == nil then
        left = left + 1
    end
end
if left > 0 then
    return {'recorded', tostring(left)}
end
redis.call('HSET', KEYS[1], 'status', 'queued', 'resume', '1')
redis.call('HDEL', KEYS[1], 'waiting_until')
redis.call('DEL', KEYS[4])
redis.call('HSET', KEYS[4], unpack(ARGV, 10))
redis.call('ZREM', KEYS[9], ARGV[1])
make_ready(KEYS[6], KEYS[7], KEYS[5], KEYS[1], KEYS[4], ARGV[1], cap, ARGV[7])
redis.call('ZREM', KEYS[8], ARGV[5])
return {'resumed', '0'}
