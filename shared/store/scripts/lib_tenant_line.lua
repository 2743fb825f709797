-- The tenant's cap: at most `cap` (PARLEY_TENANT_CONCURRENCY, 0 = no cap) of its turns are
-- admitted (in RQ's queue or running); ready turns beyond wait in the tenant's line, in order.
-- A turn's job hash field `place` records what it holds: 'admitted', 'line', or nothing.
local function under_cap(admitted_key, cap)
    return cap == 0 or tonumber(redis.call('GET', admitted_key) or '0') < cap
end

local function admit(admitted_key, queue_key, job_key, rq_job_key, job_id, enqueued_at)
    redis.call('HSET', rq_job_key, 'status', 'queued', 'enqueued_at', enqueued_at)
    redis.call('RPUSH', queue_key, job_id)
    redis.call('HSET', job_key, 'place', 'admitted')
    redis.call('INCR', admitted_key)
end

-- A lane head is ready to run: to RQ's queue when the tenant has a free place and nobody waits
-- in its line (so the line keeps its order), else to the end of the line.
local function make_ready(admitted_key, line_key, queue_key, job_key, rq_job_key, job_id, cap, enqueued_at)
    if redis.call('LLEN', line_key) == 0 and under_cap(admitted_key, cap) then
        admit(admitted_key, queue_key, job_key, rq_job_key, job_id, enqueued_at)
    else
        redis.call('RPUSH', line_key, job_id)
        redis.call('HSET', job_key, 'place', 'line')
    end
end

-- Move turns from the front of the tenant's line to RQ's queue while the tenant has free places.
local function fill_from_line(admitted_key, line_key, queue_key, job_prefix, rq_prefix, cap, enqueued_at)
    while under_cap(admitted_key, cap) do
        local job_id = redis.call('LPOP', line_key)
        if not job_id then
            return
        end
        local job_key = job_prefix .. job_id
        if redis.call('HGET', job_key, 'place') == 'line' then  -- else a stale entry: dropped
            admit(admitted_key, queue_key, job_key, rq_prefix .. job_id, job_id, enqueued_at)
        end
    end
end

-- A turn ended: give back what it holds (a place among the admitted, or its spot in the line).
local function release_place(admitted_key, line_key, job_key, job_id)
    local place = redis.call('HGET', job_key, 'place')
    if place == 'admitted' then
        if redis.call('DECR', admitted_key) < 0 then
            redis.call('SET', admitted_key, 0)
        end
    elseif place == 'line' then
        redis.call('LREM', line_key, 1, job_id)
    end
    if place then
        redis.call('HDEL', job_key, 'place')
    end
end
