-- CLAIM_DELIVERIES (worker): lease the deliveries that are due to this claim, so one worker sends each at a time,
-- and no tenant holds more than `tenant_cap` attempts in flight across the deployment, so one tenant's slow or
-- failing receivers cannot take every worker's places from the others.
-- A claimed delivery's due time moves `lease_ms` ahead, its hash names the claim (`lease`), and it is in its
-- tenant's leases until RECORD_ATTEMPT takes it out or the lease ends: if the worker dies mid-attempt, the
-- delivery is due again when the lease ends, and any worker claims it. A due delivery of a tenant at its cap is
-- parked (moved from the due set to the tenant's parked set, with its due time) rather than passed over again on
-- every claim; each claim first moves back as many of a tenant's parked deliveries as it has free places. A
-- delivery that is gone (expired), no longer pending, or whose webhook was deleted leaves the due set (the last
-- also ends `failed`).
-- KEYS: 1 due, 2 parked_tenants
-- ARGV: 1 now_ms, 2 lease_ms, 3 limit, 4 token, 5 delivery_prefix, 6 webhooks_prefix, 7 tenant_cap, 8 leases_prefix, 9 parked_prefix, 10 max_examined
-- KEYS are keys.webhook_due(), keys.webhook_parked_tenants(). token: names this claim (RECORD_ATTEMPT checks it);
-- delivery_prefix: keys.webhook_delivery('', '') without its last ':'; webhooks_prefix: keys.webhooks('');
-- leases_prefix, parked_prefix: keys.webhook_leases(''), keys.webhook_parked(''). Members are
-- `<tenant> <delivery id>` (tenant names hold no space). max_examined: most due members one claim looks at.
-- Returns the members claimed, at most `limit`. Run twice, the second run claims none of the first's (their
-- leases have not ended): they wait for their lease, then any worker sends them.
local now, lease, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local cap, max_examined = tonumber(ARGV[7]), tonumber(ARGV[10])
if not now or not lease or not limit or not cap or not max_examined or lease <= 0 or cap < 1 then
    error('bad argument: now_ms, lease_ms (> 0), limit, tenant_cap (>= 1) and max_examined must be numbers')
end

local in_flight = {}  -- tenant -> its leases that have not ended, counted once per claim
local function leased(tenant)
    if in_flight[tenant] == nil then
        local key = ARGV[8] .. tenant
        redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
        in_flight[tenant] = redis.call('ZCARD', key)
    end
    return in_flight[tenant]
end

-- Parked deliveries go back to the due set, at their due time, as far as their tenant has free places.
for _, tenant in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    local parked = ARGV[9] .. tenant
    local free = cap - leased(tenant)
    if free > 0 then
        local back = redis.call('ZRANGE', parked, 0, free - 1, 'WITHSCORES')
        for i = 1, #back, 2 do
            redis.call('ZADD', KEYS[1], back[i + 1], back[i])
            redis.call('ZREM', parked, back[i])
        end
    end
    if redis.call('EXISTS', parked) == 0 then
        redis.call('SREM', KEYS[2], tenant)
    end
end

-- Every member looked at leaves the head of the due set (removed, leased into the future, or parked), so each
-- round reads new ones.
local claimed, examined = {}, 0
while #claimed < limit and examined < max_examined do
    local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0,
                           math.min(limit - #claimed, max_examined - examined))
    if #due == 0 then
        break
    end
    for i = 1, #due, 2 do
        local member, score = due[i], due[i + 1]
        examined = examined + 1
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
        elseif leased(tenant) >= cap then
            redis.call('ZADD', ARGV[9] .. tenant, score, member)
            redis.call('ZREM', KEYS[1], member)
            redis.call('SADD', KEYS[2], tenant)
        else
            redis.call('HSET', key, 'lease', ARGV[4])
            redis.call('ZADD', KEYS[1], now + lease, member)
            redis.call('ZADD', ARGV[8] .. tenant, now + lease, member)
            redis.call('PEXPIRE', ARGV[8] .. tenant, lease)
            in_flight[tenant] = in_flight[tenant] + 1
            claimed[#claimed + 1] = member
        end
    end
end
return claimed
