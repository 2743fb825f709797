-- DELETE_AGENT (web): remove an agent's hash, index entry and name, with the name it holds when this runs.
-- KEYS: 1 agent_names, 2 agent, 3 agents
-- ARGV: 1 agent_id, 2 old_name, 3 stored_name
-- KEYS are keys.<name>. ARGV: old_name: its name as read; stored_name: the hash's `name` as read (JSON).
-- Returns 'deleted' | 'stale' (renamed or gone since read: read again).
if redis.call('HGET', KEYS[2], 'name') ~= ARGV[3] then
    return 'stale'
end
if redis.call('HGET', KEYS[1], ARGV[2]) == ARGV[1] then
    redis.call('HDEL', KEYS[1], ARGV[2])
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return 'deleted'
