-- TAKE_STEERS (worker): before a model call, move the steer requests waiting for a running turn into it.
-- Each one (a job accepted with `on_busy: steer`, waiting in keys.steers) ends here: its job is `finished`
-- with `steered_into`, its stream gets `steered` {message, job_id, at: the id of the turn's own `steered` event,
-- where the chat request's stream goes on} and `done`, its RQ job and its place in
-- the tenant's turns in flight are given back; the turn's stream gets `steered` {message} and the job hash's
-- `steered` (JSON array) keeps every message the turn took, in order, so a later attempt takes them again.
-- uses: emit
-- KEYS: 1 job, 2 events, 3 live_channel, 4 steers, 5 inflight
-- ARGV: 1 job_id, 2 attempt, 3 now_ms, 4 retention_ms, 5 job_prefix, 6 events_prefix, 7 live_prefix, 8 rq_prefix
-- KEYS are keys.<name> (steers: keys.steers of this turn; inflight: the tenant's turns in flight);
-- job_prefix, events_prefix, live_prefix: keys.job / keys.events / keys.live_channel(tenant, '');
-- rq_prefix: RQ's job key prefix.
-- Returns the turn's `steered` JSON (every message it took, this call's last) while `attempt` runs the turn,
-- else false (canceled, ended, superseded: the steers stay for FINISH_TURN). Run twice, the second run finds
-- the list empty and answers the same JSON: the caller takes the messages it has not seen.
local state = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'steered')
if state[1] ~= 'started' or state[2] ~= ARGV[2] then
    return false
end
local steered = state[3] or '[]'
local waiting = redis.call('LRANGE', KEYS[4], 0, -1)
redis.call('HDEL', KEYS[1], 'steers')
if #waiting == 0 then
    return steered
end
local taken = cjson.decode(steered)
redis.call('DEL', KEYS[4])
for _, id in ipairs(waiting) do
    local job = ARGV[5] .. id
    local fields = redis.call('HMGET', job, 'status', 'message', 'steer_of')
    if fields[1] == 'queued' and fields[3] == ARGV[1] then
        local at = append(KEYS[2], KEYS[3], cjson.encode({type = 'steered', message = fields[2]}))
        redis.call('HSET', job, 'status', 'finished', 'ended_at', ARGV[3], 'steered_into', ARGV[1])
        redis.call('PEXPIRE', job, ARGV[4])
        emit(ARGV[6] .. id, ARGV[7] .. id,
             cjson.encode({type = 'steered', message = fields[2], job_id = ARGV[1], at = at}), ARGV[4])
        emit(ARGV[6] .. id, ARGV[7] .. id, '{"type":"done"}', ARGV[4])
        redis.call('HSET', ARGV[8] .. id, 'status', 'canceled')
        redis.call('PEXPIRE', ARGV[8] .. id, ARGV[4])
        if redis.call('DECR', KEYS[5]) < 0 then
            redis.call('SET', KEYS[5], 0)
        end
        taken[#taken + 1] = fields[2]
    end
end
if #taken > 0 then
    steered = cjson.encode(taken)  -- (cjson writes an empty table as {})
end
redis.call('HSET', KEYS[1], 'steered', steered)
return steered
