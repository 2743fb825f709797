-- SET_FEEDBACK (web, PUT /sessions/{id}/messages/{message_id}/feedback): replace one stored message with the
-- same message carrying its new feedback (or none), if it is still the message the caller read, and keep the
-- feedback indexes in step, in one step. A compare-and-set: the caller builds the new message JSON from the
-- one it read (Python's json keeps every field of it exactly as stored), and reads again when it changed.
-- KEYS: 1 session, 2 messages, 3 feedback, 4 agent_feedback
-- ARGV: 1 agent_id, 2 index, 3 expected, 4 replacement, 5 member, 6 rated_ms
-- KEYS are keys.<name> (agent_feedback of agent_id). agent_id: the agent the caller found the session bound
-- to; index: the message's position in the list; expected: the message JSON as read; replacement: the message
-- JSON to store; member: `<session id> <index>`; rated_ms: the index score ('' = the feedback was cleared:
-- the member leaves both indexes).
-- Returns 'missing' (no such session, or bound to another agent: deleted and made again), 'changed' (the
-- message is not `expected` any more: read again) or 'stored'.
-- Run twice (a lost reply), the second run finds `replacement`, not `expected`, answers 'changed' and writes
-- nothing; the caller then reads the message as stored and finds nothing left to do.
local index = tonumber(ARGV[2])
if not index or (ARGV[6] ~= '' and not tonumber(ARGV[6])) then
    error('bad argument: index and rated_ms must be numbers')
end
if redis.call('HGET', KEYS[1], 'agent_id') ~= ARGV[1] then
    return 'missing'
end
if redis.call('LINDEX', KEYS[2], index) ~= ARGV[3] then
    return 'changed'
end
redis.call('LSET', KEYS[2], index, ARGV[4])
if ARGV[6] == '' then
    redis.call('ZREM', KEYS[3], ARGV[5])
    redis.call('ZREM', KEYS[4], ARGV[5])
else
    redis.call('ZADD', KEYS[3], ARGV[6], ARGV[5])
    redis.call('ZADD', KEYS[4], ARGV[6], ARGV[5])
end
return 'stored'
