-- ADD_BOUNDED (telemetry.write, any process): count into a bounded metric (telemetry.BOUNDED), whose hash
-- holds at most `most` label sets: a new label set counts in its `other` field once the hash is full.
-- KEYS: 1 metric
-- ARGV: 1 field, 2 amount, 3 most, 4 other
-- Returns the field's new count.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
    return redis.call('HINCRBY', KEYS[1], ARGV[4], ARGV[2])
end
return redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
