-- RECORD_ATTEMPT (worker): one attempt of a delivery, and what follows: delivered, retried at `next_ms`, or failed.
-- The attempt is kept (the newest `max_attempts`, with a count of them all) whoever holds the lease. A delivered
-- or failed delivery leaves the due set and is kept `keep_ms` more; a retry is scheduled only by the claim that
-- holds the lease (a worker whose lease ran out and was taken over leaves the schedule to the new holder). A
-- delivery delivered once stays delivered. The claim that holds the lease takes the delivery out of its tenant's
-- leases (CLAIM_DELIVERIES counts them against the tenant's cap).
-- KEYS: 1 delivery, 2 due, 3 leases
-- ARGV: 1 member, 2 token, 3 call_id, 4 attempt, 5 outcome, 6 next_ms, 7 keep_ms, 8 max_attempts
-- KEYS are keys.webhook_delivery, keys.webhook_due(), keys.webhook_leases(tenant). member: `<tenant> <delivery id>`; token: the claim's
-- (CLAIM_DELIVERIES); call_id names this call (run twice, the second run writes nothing); attempt: JSON object
-- {at, status_code?, error?, duration_ms}; outcome: delivered | retry | failed; next_ms: when a retry is due.
-- Returns the delivery's status after this call ('' when it is gone).
local state = redis.call('HMGET', KEYS[1], 'status', 'lease', 'recorded', 'attempts', 'attempt_count')
if not state[1] then
    return ''
end
if state[3] == ARGV[3] then
    return state[1]
end
local outcome, max_attempts, keep = ARGV[5], tonumber(ARGV[8]), tonumber(ARGV[7])
if outcome ~= 'delivered' and outcome ~= 'retry' and outcome ~= 'failed' then
    error('bad argument: unknown outcome')
end
if not max_attempts or not keep or not tonumber(ARGV[6]) then
    error('bad argument: next_ms, keep_ms and max_attempts must be numbers')
end
local attempt = cjson.decode(ARGV[4])
local attempts = state[4] and cjson.decode(state[4]) or {}
-- Every check passed: from here on, only writes.
attempts[#attempts + 1] = attempt
while #attempts > max_attempts do
    table.remove(attempts, 1)
end
redis.call('HSET', KEYS[1], 'attempts', cjson.encode(attempts), 'attempt_count', (tonumber(state[5]) or 0) + 1,
           'recorded', ARGV[3])
if state[2] == ARGV[2] then
    redis.call('ZREM', KEYS[3], ARGV[1])
end
local status = state[1]
if outcome == 'delivered' and status ~= 'delivered' then
    status = 'delivered'
elseif outcome == 'failed' and status == 'pending' and state[2] == ARGV[2] then
    status = 'failed'
elseif outcome == 'retry' and status == 'pending' and state[2] == ARGV[2] then
    redis.call('HSET', KEYS[1], 'next_attempt_at', ARGV[6])
    redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
    return status
else
    return status
end
redis.call('HSET', KEYS[1], 'status', status, 'next_attempt_at', '')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], keep)
return status
