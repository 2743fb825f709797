-- CREATE_DELIVERY (worker): one delivery of one turn end to one webhook, made once. Its id is derived from the
-- webhook's id and the turn-ends entry's (shared/store/webhooks.py), so a dispatcher that handles the entry again
-- (its worker died before XACK) finds it and makes nothing twice. Stores the delivery (the body frozen now),
-- indexes it under its webhook (the newest `max_listed` kept) and makes it due now.
-- KEYS: 1 delivery, 2 index, 3 due
-- ARGV: 1 delivery_id, 2 member, 3 now_ms, 4 keep_ms, 5 max_listed, 6.. fields
-- KEYS are keys.webhook_delivery, keys.webhook_deliveries (of its webhook), keys.webhook_due(). member:
-- `<tenant> <delivery id>`; fields: the delivery's hash fields, name then value (the body's bytes stored as
-- they are); keep_ms: how long the delivery and the index are kept from now (its retries, then the retention).
-- Returns 1 when the delivery was made, 0 when it exists (run twice: the second run writes nothing).
if redis.call('EXISTS', KEYS[1]) == 1 then
    return 0
end
local max_listed, keep = tonumber(ARGV[5]), tonumber(ARGV[4])
if not max_listed or not keep or not tonumber(ARGV[3]) or #ARGV < 7 or #ARGV % 2 ~= 1 then
    error('bad argument: now_ms, keep_ms and max_listed must be numbers, fields name and value pairs')
end
-- Every check passed: from here on, only writes.
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(max_listed + 1))
redis.call('PEXPIRE', KEYS[2], keep)
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
return 1
