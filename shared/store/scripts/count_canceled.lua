-- COUNT_CANCELED (worker, an attempt whose turn was canceled while it ran): the tokens the attempt spent before it
-- stopped, counted in its tenant's usage as one turn, once per job, and only when the attempt was the turn's last
-- (the cancel's own FINISH_TURN, run by a web process, knows no tokens; a superseded older attempt counts nothing,
-- as a dead worker's does).
-- uses: usage
-- KEYS: 1 job, 2 usage_day, 3 usage_agents, 4 usage_sessions
-- ARGV: 1 attempt, 2 usage, 3 usage_cap, 4 usage_expire_at
-- job: keys.job; usage_*: keys.usage_day, usage_agents, usage_sessions of today; usage: the attempt's counts (JSON,
-- lib_usage.lua); usage_cap: PARLEY_USAGE_MAX_GROUPS_PER_DAY; usage_expire_at: when the day's counters expire (ms).
-- Returns 1 when counted, 0 when not (not canceled, another attempt's, or counted before).
local usage = usage_decode(ARGV[2], ARGV[3], ARGV[4])
local status, attempt = unpack(redis.call('HMGET', KEYS[1], 'status', 'attempt'))
if not usage or status ~= 'canceled' or attempt ~= ARGV[1] then
    return 0
end
if redis.call('HSETNX', KEYS[1], 'usage_counted', '1') == 0 then
    return 0
end
record_usage(KEYS[2], KEYS[3], KEYS[4], KEYS[1], usage, ARGV[3], ARGV[4])
return 1
