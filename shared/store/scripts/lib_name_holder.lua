-- The id holding `name` in the name index, unless that id's hash is gone (a name left behind by a
-- write that stopped half-way before these scripts): such a name is free.
local function name_holder(names_key, name, agent_key_prefix)
    local holder = redis.call('HGET', names_key, name)
    if holder and redis.call('EXISTS', agent_key_prefix .. holder) == 1 then
        return holder
    end
    return false
end
