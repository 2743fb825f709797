-- SWEEP_SESSION (worker's sweeper): delete what is left of one expired session (its agent's session_ttl_s):
-- its keys, its places in the tenant's and the agent's lists, its entry in the expiries.
-- KEYS: 1 session_expiries, 2 session, 3 messages, 4 notes, 5 session_images, 6 summary_lock, 7 lane, 8 sessions, 9 agent_sessions
-- ARGV: 1 member, 2 session_id, 3 now_ms, 4 busy_retry_ms, 5 agent_id
-- KEYS are keys.<name> of the member's tenant, agent and session; member: its entry in session_expiries
-- (keys.session_expiry_member); busy_retry_ms: how long a session with a turn in its lane is left before the
-- next look (that turn's end pushes its expiry anyway); agent_id: the member's agent.
-- Returns 'deleted' | 'not_due' (pushed forward meanwhile, or gone from the expiries) | 'busy' (a turn in its
--   lane keeps it) | 'renewed' (a session of that id lives on without this expiry: only the entry goes, and its
--   place in the old agent's list when it is another agent's now).
-- Run twice: the second run finds no entry ('not_due') and writes nothing.
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
local now = tonumber(ARGV[3])
if not due or tonumber(due) > now then
    return 'not_due'
end
if redis.call('LLEN', KEYS[7]) > 0 then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[1])
    return 'busy'
end
local expires_at = redis.call('HGET', KEYS[2], 'expires_at')
if redis.call('EXISTS', KEYS[2]) == 1 and (not expires_at or tonumber(expires_at) > now) then
    redis.call('ZREM', KEYS[1], ARGV[1])
    if redis.call('HGET', KEYS[2], 'agent_id') ~= ARGV[5] then
        redis.call('ZREM', KEYS[9], ARGV[2])
    end
    return 'renewed'
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
redis.call('ZREM', KEYS[8], ARGV[2])
redis.call('ZREM', KEYS[9], ARGV[2])
redis.call('ZREM', KEYS[1], ARGV[1])
return 'deleted'
