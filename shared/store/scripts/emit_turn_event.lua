-- EMIT_TURN_EVENT (worker): append one event of a running attempt to the turn's stream and publish it.
-- uses: emit
-- KEYS: 1 job, 2 events, 3 live_channel
-- ARGV: 1 attempt, 2 event, 3 retention_ms, 4 call_id, 5 index
-- KEYS are keys.<name>; event: the event JSON; call_id: one per batch of events; index: the event's
-- index in its call (1, 2, ...).
-- Emits only while this attempt is the running one. Returns the event id, 1 when this call already
-- wrote this event (a batch sent again after a lost reply: nothing is written twice), or false when
-- the turn was canceled, finished or taken over by a newer attempt (the worker then stops).
local state = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'emitted')
if state[1] ~= 'started' or state[2] ~= ARGV[1] then
    return false
end
local index = tonumber(ARGV[5])
if not index then
    error('bad argument: the event index is not a number')
end
local call, written = string.match(state[3] or '', '^(%S+) (%d+)$')
if call == ARGV[4] and tonumber(written) >= index then
    return 1
end
redis.call('HSET', KEYS[1], 'emitted', ARGV[4] .. ' ' .. index)
return emit(KEYS[2], KEYS[3], ARGV[2], ARGV[3])
