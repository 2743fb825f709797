-- PAUSE_TURN (worker): a running attempt stops to wait for people's decisions on tool calls (approvals).
-- Records what the turn needs to go on (`paused`, the worker's state, opaque here) and the calls that wait
-- (`pending`), emits `approval_required` for each and `status: waiting`, and gives back the turn's place
-- among the tenant's admitted turns (a waiting turn holds no worker slot), admitting turns from the tenant's
-- line into it. The turn stays its lane's head, so the session's later turns wait behind it. Its records are
-- kept for the wait plus the retention; the wait's deadline goes into the deployment's approval deadlines. When
-- the tenant has webhooks, `turn.waiting` goes into the turn-ends stream (lib_turn_end.lua).
-- uses: emit, decode, tenant_line, turn_end
-- KEYS: 1 job, 2 events, 3 live_channel, 4 tool_runs, 5 tenant_admitted, 6 tenant_line, 7 rq_queue, 8 deadlines, 9 webhooks, 10 turn_ends
-- ARGV: 1 job_id, 2 attempt, 3 call_id, 4 paused, 5 pending, 6 events_out, 7 keep_ms, 8 deadline_ms, 9 member, 10 job_prefix, 11 rq_prefix, 12 tenant_cap, 13 enqueued_at
-- KEYS are keys.<name> (deadlines: keys.approval_deadlines(); webhooks: keys.webhooks(tenant); turn_ends:
-- keys.turn_ends()). attempt: the pausing attempt (the fence);
-- call_id names this call (run twice, it answers 1 again and writes nothing); paused: the worker's state
-- (JSON); pending: JSON array of {call_id, kind, tool_name, args}; events_out: JSON array of event JSON;
-- keep_ms: how long the job, its events and tool runs are kept from now (the wait, the retention and a
-- turn's run); deadline_ms: when the wait times out (ms); member: `<tenant> <job id>`; job_prefix:
-- keys.job(tenant, ''); rq_prefix: RQ's job key prefix; tenant_cap: 0 = no cap; enqueued_at: RQ's text time.
-- Returns 1 when the turn now waits, 0 when this attempt no longer runs it (canceled, ended, superseded).
local state = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'pause_call')
if state[3] == ARGV[3] then
    return 1
end
if state[1] ~= 'started' or state[2] ~= ARGV[2] then
    return 0
end
local payloads = decode_strings(ARGV[6], 'events')
local cap = tonumber(ARGV[12])
if not cap or not tonumber(ARGV[7]) or not tonumber(ARGV[8]) then
    error('bad argument: keep_ms, deadline_ms and the tenant cap must be numbers')
end
cjson.decode(ARGV[4])
cjson.decode(ARGV[5])
-- Every check passed: from here on, only writes.
redis.call('HSET', KEYS[1], 'status', 'waiting', 'paused', ARGV[4], 'pending', ARGV[5], 'pause_call', ARGV[3],
           'waiting_until', ARGV[8])
redis.call('HDEL', KEYS[1], 'decisions')
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('PEXPIRE', KEYS[4], ARGV[7])
for _, payload in ipairs(payloads) do
    emit(KEYS[2], KEYS[3], payload, ARGV[7])
end
release_place(KEYS[5], KEYS[6], KEYS[1], ARGV[1])
fill_from_line(KEYS[5], KEYS[6], KEYS[7], ARGV[10], ARGV[11], cap, ARGV[13])
redis.call('ZADD', KEYS[8], ARGV[8], ARGV[9])
record_turn_end(KEYS[9], KEYS[10], KEYS[1], ARGV[1], 'turn.waiting')
return 1
