-- START_TURN (worker): mark the turn started and count the attempt, recording telemetry in the same step.
-- The attempt number fences later writes: a worker presumed dead whose turn was retried elsewhere can no
-- longer emit or commit.
-- uses: emit, telemetry
-- KEYS: 1 job, 2 events, 3 live_channel, 4.. metrics
-- ARGV: 1 now_ms, 2 stream_ttl_ms, 3 call_id, 4 deltas
-- KEYS are keys.<name>; metrics: the metric hashes (lib_telemetry.lua). stream_ttl_ms: the events stream's
-- lifetime from here, the retention plus the longest the attempt may run, so EMIT need not extend it. call_id names this call (a fresh
-- one per call: its retry is answered first, below); deltas: the process's buffered metric deltas.
-- Returns {'started', attempt, the job hash as a flat list} (saving the worker a read) |
--         {'final', 0} (already finished, failed or canceled) | {'waiting', 0} (it waits for decisions) |
--         {'missing', 0}. A turn resumed after decisions (its `resume` flag) gets `status: resumed`.
-- In three parts, in this order:
-- 1. Run twice: this call ran already (its reply was lost and the client sent it again): the same
--    answer, and nothing is written, telemetry neither.
local started = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'start_call')
if started[1] == 'started' and started[3] == ARGV[3] then
    return {'started', tonumber(started[2]), redis.call('HGETALL', KEYS[1])}
end
local metrics = {unpack(KEYS, 4)}
local deltas = cjson.decode(ARGV[4])  -- before the step writes: bad deltas write nothing

-- 2. The step. Its `status` events are the only ones not built by events.encode (Lua literals).
local function start()
    local status = started[1]  -- read once, in part 1
    if not status then
        return {'missing', 0}
    end
    if status == 'finished' or status == 'failed' or status == 'canceled' then
        return {'final', 0}
    end
    if status == 'waiting' then
        return {'waiting', 0}  -- a stale run of a turn that waits for decisions: DECIDE_APPROVAL resumes it
    end
    local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
    redis.call('HSET', KEYS[1], 'status', 'started', 'start_call', ARGV[3])
    if redis.call('HDEL', KEYS[1], 'resume') == 1 then
        emit(KEYS[2], KEYS[3], cjson.encode({type = 'status', message = 'resumed'}), ARGV[2])
    elseif attempt == 1 then
        redis.call('HSET', KEYS[1], 'started_at', ARGV[1])
        emit(KEYS[2], KEYS[3], cjson.encode({type = 'status', message = 'started'}), ARGV[2])
    else
        emit(KEYS[2], KEYS[3], cjson.encode({type = 'status', message = 'retrying', attempt = attempt}), ARGV[2])
    end
    return {'started', attempt, redis.call('HGETALL', KEYS[1])}
end
local result = start()

-- 3. Telemetry: the buffered deltas, and the queue wait of a turn's first start.
metric_apply(metrics, deltas)
if result[1] == 'started' and tonumber(result[2]) == 1 then
    local times = redis.call('HMGET', KEYS[1], 'enqueued_at', 'started_at')
    if times[1] and times[2] then
        metric_observe(metrics, METRIC.parley_queue_wait_seconds, '[]',
                       (tonumber(times[2]) - tonumber(times[1])) / 1000)
    end
end
return result
