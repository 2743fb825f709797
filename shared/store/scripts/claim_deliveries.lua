-- CLAIM_DELIVERIES (worker): lease the deliveries that are due to this claim, so one worker sends each at a time.
-- A claimed delivery's due time moves `lease_ms` ahead and its hash names the claim (`lease`): if the worker dies
-- mid-attempt, the delivery is due again when the lease ends, and any worker claims it. A delivery that is gone
-- (expired), no longer pending, or whose webhook was deleted leaves the due set (the last also ends `failed`).
-- KEYS: 1 due
-- ARGV: 1 now_ms, 2 lease_ms, 3 limit, 4 token, 5 delivery_prefix, 6 webhooks_prefix
-- KEYS are keys.webhook_due(). token: names this claim (RECORD_ATTEMPT checks it); delivery_prefix:
-- keys.webhook_delivery('', '') without its last ':'; webhooks_prefix: keys.webhooks(''). Members are `<tenant> <delivery id>` (tenant names hold no space).
-- Returns the members claimed, at most `limit`. Run twice, the second run claims none of the first's (their
-- leases have not ended): they wait for their lease, then any worker sends them.
local now, lease, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if not now or not lease or not limit then
    error('bad argument: now_ms, lease_ms and limit must be numbers')
end
local claimed = {}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
for _, member in ipairs(due) do
    local space = string.find(member, ' ', 1, true)
    local tenant, delivery_id = '', member
    if space then
        tenant, delivery_id = string.sub(member, 1, space - 1), string.sub(member, space + 1)
    end
    local key = ARGV[5] .. tenant .. ':' .. delivery_id
    local state = redis.call('HMGET', key, 'status', 'webhook')
    if state[1] ~= 'pending' then
        redis.call('ZREM', KEYS[1], member)
    elseif redis.call('HEXISTS', ARGV[6] .. tenant, state[2]) == 0 then
        redis.call('HSET', key, 'status', 'failed', 'next_attempt_at', '', 'ended_by', 'deleted')
        redis.call('ZREM', KEYS[1], member)
    else
        redis.call('HSET', key, 'lease', ARGV[4])
        redis.call('ZADD', KEYS[1], now + lease, member)
        claimed[#claimed + 1] = member
    end
end
return claimed
