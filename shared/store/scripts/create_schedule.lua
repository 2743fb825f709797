-- CREATE_SCHEDULE (web, POST /schedules): store a new schedule and make it due, unless the tenant holds its most.
-- KEYS: 1 schedule, 2 schedules, 3 due
-- ARGV: 1 schedule_id, 2 member, 3 created_ms, 4 next_run_ms, 5 max_schedules, 6 fields
-- schedule: keys.schedule; schedules: keys.schedules (the tenant's ids by creation); due: keys.schedules_due;
-- member: '<tenant> <schedule id>' (its entry in due); fields: the schedule hash's fields, a JSON object of strings.
-- Returns 'created', or 'full' (nothing written) when the tenant holds max_schedules schedules already.
-- Run twice: the schedule id names the call; a second run finds the schedule and answers 'created', writing nothing.
local fields = cjson.decode(ARGV[6])
local max_schedules = tonumber(ARGV[5])
if redis.call('EXISTS', KEYS[1]) == 1 then
    return 'created'
end
if redis.call('ZCARD', KEYS[2]) >= max_schedules then
    return 'full'
end
local flat = {}
for name, value in pairs(fields) do
    flat[#flat + 1] = name
    flat[#flat + 1] = tostring(value)
end
redis.call('HSET', KEYS[1], unpack(flat))
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
return 'created'
