-- ADD_USAGE (worker, a summary job's model call): the tokens a call outside any turn spent, added to its tenant's
-- usage of the day under the session's agent and the session, counting no turn (lib_usage.lua; a turn's usage is
-- added by FINISH_TURN instead).
-- uses: usage
-- KEYS: 1 usage_day, 2 usage_agents, 3 usage_sessions
-- ARGV: 1 agent_id, 2 session_id, 3 usage, 4 usage_cap, 5 usage_expire_at
-- usage_*: keys.usage_day, usage_agents, usage_sessions of today; usage: the call's counts (JSON, `turns` 0);
-- usage_cap: PARLEY_USAGE_MAX_GROUPS_PER_DAY; usage_expire_at: when the day's counters expire (ms).
-- Returns 1.
local usage = usage_decode(ARGV[3], ARGV[4], ARGV[5])
if usage then
    record_group_usage(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], usage, ARGV[4], ARGV[5])
end
return 1
