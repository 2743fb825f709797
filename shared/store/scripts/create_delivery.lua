-- CREATE_DELIVERY (worker): one delivery of one turn end to one webhook, made once. Its id is derived from the
-- webhook's id and the turn-ends entry's (shared/store/webhooks.py), so a dispatcher that handles the entry again
-- (its worker died before XACK) finds it and makes nothing twice. Stores the delivery (the body frozen now),
-- indexes it under its webhook (the newest `max_listed` kept) and makes it due now.
-- KEYS: 1 delivery, 2 index, 3 due
-- ARGV: 1 delivery_id, 2 member, 3 fields, 4 now_ms, 5 keep_ms, 6 max_listed
-- KEYS are keys.webhook_delivery, keys.webhook_deliveries (of its webhook), keys.webhook_due(). member:
-- `<tenant> <delivery id>`; fields: JSON object of the delivery's hash fields; keep_ms: how long the delivery and
-- the index are kept from now (its retries, then the retention).
-- Returns 1 when the delivery was made, 0 when it exists (run twice: the second run writes nothing).
if redis.call('EXISTS', KEYS[1]) == 1 then
    return 0
end
local fields = cjson.decode(ARGV[3])
local max_listed, keep = tonumber(ARGV[6]), tonumber(ARGV[5])
if type(fields) ~= 'table' or not max_listed or not keep then
    error('bad argument: fields must be a JSON object, keep_ms and max_listed numbers')
end
local flat = {}
for name, value in pairs(fields) do
    flat[#flat + 1] = name
    flat[#flat + 1] = tostring(value)
end
-- Every check passed: from here on, only writes.
redis.call('HSET', KEYS[1], unpack(flat))
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(max_listed + 1))
redis.call('PEXPIRE', KEYS[2], keep)
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
return 1
