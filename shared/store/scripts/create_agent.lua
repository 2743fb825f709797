-- CREATE_AGENT (web): store a new agent: its hash, its place in the tenant's index and its name, together.
-- uses: name_holder
-- KEYS: 1 agent_names, 2 agent, 3 agents
-- ARGV: 1 name, 2 agent_id, 3 created_at, 4 max_agents, 5 agent_prefix, 6.. fields
-- KEYS are keys.<name> (agent_names: the tenant's name index, a hash; agents: its agent index, a zset).
-- Arguments: created_at: ms; max_agents: most agents per tenant (0 = no limit); agent_prefix: keys.agent(tenant, '');
--   fields: the hash as field, value pairs.
-- Returns 'created' | 'name_taken' | 'id_taken' | 'too_many'. Every check comes before the first
-- write and nothing is decoded, so a refused or failing create writes nothing.
if name_holder(KEYS[1], ARGV[1], ARGV[5]) then
    return 'name_taken'
end
if redis.call('EXISTS', KEYS[2]) == 1 then
    return 'id_taken'
end
local limit = tonumber(ARGV[4])
if limit > 0 and redis.call('ZCARD', KEYS[3]) >= limit then
    return 'too_many'
end
redis.call('HSET', KEYS[2], unpack(ARGV, 6))
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 'created'
