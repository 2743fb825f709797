-- UPDATE_AGENT (web): change an agent's fields; a rename moves its name in the tenant's name index.
-- uses: name_holder
-- KEYS: 1 agent_names, 2 agent
-- ARGV: 1 agent_id, 2 old_name, 3 new_name, 4 stored_name, 5 stored_updated_at, 6 agent_prefix, 7.. fields
-- KEYS are keys.<name>. ARGV: old_name: its name as read; stored_name, stored_updated_at: the hash's
-- `name` and `updated_at` as read (JSON); agent_prefix: keys.agent(tenant, ''); fields: the new hash as
-- field, value pairs.
-- Writes only if the agent is still as read (same name and updated_at).
-- Returns 'updated' | 'stale' (changed or gone since read: read again) | 'name_taken'.
local seen = redis.call('HMGET', KEYS[2], 'name', 'updated_at')
if not seen[1] or seen[1] ~= ARGV[4] or (seen[2] or 'null') ~= ARGV[5] then
    return 'stale'
end
if ARGV[3] ~= ARGV[2] then
    local holder = name_holder(KEYS[1], ARGV[3], ARGV[6])
    if holder and holder ~= ARGV[1] then
        return 'name_taken'
    end
    if redis.call('HGET', KEYS[1], ARGV[2]) == ARGV[1] then
        redis.call('HDEL', KEYS[1], ARGV[2])
    end
    redis.call('HSET', KEYS[1], ARGV[3], ARGV[1])
end
redis.call('HSET', KEYS[2], unpack(ARGV, 7))
return 'updated'
