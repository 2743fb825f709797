-- Telemetry (shared/telemetry.py) recorded inside a turn step, so a turn's start and end are counted
-- exactly once, in the same atomic step, only when that step really started or ended the turn.
-- `metrics`: the metric hashes a recording script takes as its last KEYS, one per telemetry.METRICS, in
-- that order; `deltas`: the process's buffered deltas, telemetry.script_arg's JSON
-- [[metric index, field, amount(, other field: a bounded metric's)], ...].
-- METRIC (name -> index), BUCKETS (index -> {{bound, le text}, ...}) and BOUNDED (index -> most label
-- sets) are generated from telemetry.METRICS when the scripts load (scripts/__init__.py).

-- Add to one field; a bounded metric's new label set goes to its `other` field once the metric is full.
local function metric_add(metrics, index, field, amount, other)
    local key = metrics[index]
    if other and redis.call('HEXISTS', key, field) == 0 and redis.call('HLEN', key) >= BOUNDED[index] then
        field = other
    end
    if string.sub(field, -4) == '|sum' then
        redis.call('HINCRBYFLOAT', key, field, amount)
    else
        redis.call('HINCRBY', key, field, amount)
    end
end

-- One observation of a histogram: its bucket's count and its sum.
local function metric_observe(metrics, index, labels, seconds)
    if seconds < 0 then seconds = 0 end
    local le = '+Inf'
    for _, bucket in ipairs(BUCKETS[index]) do
        if seconds <= bucket[1] then le = bucket[2] break end
    end
    metric_add(metrics, index, labels .. '|' .. le, 1)
    metric_add(metrics, index, labels .. '|sum', seconds)
end

local function metric_apply(metrics, deltas)
    for _, delta in ipairs(deltas) do
        metric_add(metrics, delta[1], delta[2], delta[3], delta[4])
    end
end
