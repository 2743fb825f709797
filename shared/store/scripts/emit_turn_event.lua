-- EMIT_TURN_EVENT (worker): append a batch of a running attempt's events to the turn's stream and publish
-- each, in order, in one step.
-- uses: emit
-- KEYS: 1 job, 2 events, 3 live_channel
-- ARGV: 1 attempt, 2 call_id, 3.. payloads
-- KEYS are keys.<name>; call_id: one per batch; payloads: the batch's event JSONs, in order. The stream's
-- lifetime is not touched: START_TURN gave it the retention plus the longest the attempt may run.
-- Emits only while this attempt is the running one. Returns 1 when the batch is written (now, or by an
-- earlier run of this call whose reply was lost: the job hash's `emitted` names the last call written, and
-- the script is atomic, so a batch is written whole or not at all and never twice), or false when the turn
-- was canceled, finished or taken over by a newer attempt (the worker then stops).
local state = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'emitted')
if state[1] ~= 'started' or state[2] ~= ARGV[1] then
    return false
end
if state[3] == ARGV[2] then
    return 1
end
for position = 3, #ARGV do
    append(KEYS[2], KEYS[3], ARGV[position])
end
redis.call('HSET', KEYS[1], 'emitted', ARGV[2])
return 1
