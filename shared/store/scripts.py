"""Lua scripts for every check-then-write on a turn, so each step is atomic in Redis.

Why Lua: a turn's life touches several keys at once (the session, its lane, the job record, its
event stream and RQ's queue), and each step must happen whole or not at all, whichever process
dies when. Each script documents its KEYS and ARGV. Snippets shared by several scripts are
plain Lua text joined in front of the script body (as rq/rate_limit.py does).

A session's *lane* is the list of its accepted, unfinished turns in arrival order (RPUSH in
ACCEPT_TURN, so the order comes from Redis). Only the lane's head is ever in RQ's queue; the
others wait as `deferred` RQ jobs. FINISH_TURN removes a turn from its lane and pushes the new
head onto RQ's queue in the same step, so turns of a session run one at a time, in order,
across any number of workers, with no window in which a crash could stall the lane.

A tenant's *line* sits between the lanes and RQ's queue: at most PARLEY_TENANT_CONCURRENCY of a
tenant's turns are *admitted* (in RQ's queue or running, counted in `keys.tenant_admitted`); a lane
head that becomes ready beyond that waits, still a `deferred` RQ job, in the tenant's line, and
moves to RQ's queue when one of the tenant's admitted turns ends. So one tenant's backlog queues in
its own line, never in front of another tenant's turns. The job hash's `place` field says what a
turn holds ('admitted', 'line', or nothing), so each ending releases exactly that.

Whole or not at all: Redis keeps what a script wrote before it failed. So every script decodes
and checks all of its arguments before its first write, and a bad argument changes nothing.

Run twice: the Redis client retries a command once when its connection drops (connection.py),
and the first run may have happened before the reply was lost. So a script run a second time with
the same arguments must change nothing and answer as the first run did:
- ACCEPT_TURN: the job id is the call's name; a job that exists answers 'accepted' again.
- START_TURN, FINISH_TURN: the caller names each call (a fresh `call id`); the job hash keeps the id
  of the call that started or ended the turn (`start_call`, `finish_call`), and `first_run_only`
  puts the check in front of the whole script, telemetry wrapper included, so a second run of that
  call gives the first run's answer and writes nothing, telemetry neither.
- EMIT_TURN_EVENT: each event carries its call id and its index in that call; the job hash keeps the
  last one written (`emitted`), so a batch sent again writes only the events the first send did not.
- CREATE_SESSION is NOT: its second run finds the session and answers "not created" (see there).
"""

from __future__ import annotations

_EMIT = """
-- Append one event to a job's stream, keep the stream for ttl_ms, and publish it live as
-- "<entry id> <json>". The stream entry id is the SSE event id.
local function emit(stream, channel, payload, ttl_ms)
    local id = redis.call('XADD', stream, '*', 'e', payload)
    redis.call('PEXPIRE', stream, ttl_ms)
    redis.call('PUBLISH', channel, id .. ' ' .. payload)
    return id
end
"""

_ENSURE_SESSION = """
-- Create the session unless it exists; the agent's first message becomes message 0.
-- Returns the agent id the session is bound to, and 1 when it was created here.
local function ensure_session(session_key, sessions_key, agent_sessions_key, messages_key,
                              session_id, agent_id, now_ms, metadata, first_message_json)
    local bound = redis.call('HGET', session_key, 'agent_id')
    if bound then
        return bound, 0
    end
    redis.call('HSET', session_key, 'agent_id', agent_id, 'created_at', now_ms,
               'metadata', metadata, 'exchanges', 0)
    redis.call('ZADD', sessions_key, now_ms, session_id)
    redis.call('ZADD', agent_sessions_key, now_ms, session_id)
    if first_message_json ~= '' then
        redis.call('RPUSH', messages_key, first_message_json)
    end
    return agent_id, 1
end
"""

_DECODE = """
-- Decode a JSON argument that must be an array of strings (what = its name, for the error), or
-- an object of strings when as_map is true. Raises before anything is written: see the module doc.
local function decode_strings(text, what, as_map)
    local ok, value = pcall(cjson.decode, text)
    if not ok or type(value) ~= 'table' then
        error('bad argument: ' .. what .. ' is not valid JSON')
    end
    for name, item in pairs(value) do
        if type(item) ~= 'string' or (as_map and type(name) ~= 'string') then
            error('bad argument: ' .. what .. ' holds something other than strings')
        end
    end
    return value
end
"""

_TENANT_LINE = """
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
"""

LIMITS = """
-- The chat routes' limits, checked before anything is written (ACCEPT_TURN and the summary's
-- ADMIT_REPORT in memory.py): the whole queue's depth, the tenant's turns in flight, the API key's
-- rate. Returns nil when all allow, else {'queue_full', ''} | {'busy', ''} |
-- {'rate_limited', ms until the key's window ends}.
local function over_limits(queue, inflight, rate, max_depth, max_inflight, max_rate)
    if redis.call('LLEN', queue) >= tonumber(max_depth) then
        return {'queue_full', ''}
    end
    if tonumber(max_inflight) > 0 and tonumber(redis.call('GET', inflight) or '0') >= tonumber(max_inflight) then
        return {'busy', ''}
    end
    if tonumber(max_rate) > 0 and tonumber(redis.call('GET', rate) or '0') >= tonumber(max_rate) then
        return {'rate_limited', tostring(redis.call('PTTL', rate))}
    end
    return nil
end
-- Count one admitted request against the key's rate window, which starts with its first one.
local function count_rate(rate, max_rate, window_ms)
    if tonumber(max_rate) > 0 and redis.call('INCR', rate) == 1 then
        redis.call('PEXPIRE', rate, window_ms)
    end
end
"""

CREATE_SESSION = (
    _ENSURE_SESSION
    + """
-- KEYS: session, sessions, agent_sessions, messages
-- ARGV: session_id, agent_id, now_ms, metadata_json, first_message_json
-- Returns {bound agent id, created (0|1)}.
-- Not safe to run twice: a second run (the client's retry after a lost reply) answers created 0 for
-- the session the first run created. It writes nothing more, but its caller then answers 409.
local bound, created = ensure_session(KEYS[1], KEYS[2], KEYS[3], KEYS[4],
                                      ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
return {bound, created}
"""
)

ACCEPT_TURN = (
    _EMIT
    + LIMITS
    + _ENSURE_SESSION
    + _DECODE
    + _TENANT_LINE
    + """
-- KEYS: 1 session, 2 sessions, 3 agent_sessions, 4 messages, 5 lane, 6 job, 7 events, 8 live channel,
--       9 idempotency key, 10 RQ job hash, 11 RQ queue, 12 tenant's in-flight counter,
--       13 API key's rate counter, 14 tenant's admitted counter, 15 tenant's line
-- ARGV: 1 job_id, 2 session_id, 3 agent_id, 4 now_ms, 5 metadata_json, 6 first_message_json,
--       7 job fields (JSON object of strings), 8 `session` event JSON, 9 `status: queued` event JSON,
--       10 retention_ms, 11 idempotency value ('' = no key), 12 idempotency ttl_ms,
--       13 max queue depth, 14 RQ enqueued_at text, 15 max turns in flight per tenant (0 = no limit),
--       16 turns per key per rate window (0 = no limit), 17 rate window ms,
--       18 '1' to create the session if missing, '0' for a turn that brings its own history
--          (no session is created, so nothing is committed: OpenAI-style stateless calls),
--       19 the tenant's cap of admitted turns (0 = no cap), 20 the tenant's job key prefix,
--       21 RQ job key prefix
-- Returns {'accepted', job_id} | {'existing', idempotency value} | {'queue_full', ''} |
--         {'busy', ''} | {'rate_limited', ms until the window ends} | {'conflict', bound agent id}.
-- Nothing is written unless the answer is 'accepted' (a bad argument raises before any write).
-- Run twice with the same job id (a client retry after a dropped connection), it accepts once.
if redis.call('EXISTS', KEYS[6]) == 1 then
    return {'accepted', ARGV[1]}
end
if ARGV[11] ~= '' then
    local existing = redis.call('GET', KEYS[9])
    if existing then
        return {'existing', existing}
    end
end
local refused = over_limits(KEYS[11], KEYS[12], KEYS[13], ARGV[13], ARGV[15], ARGV[16])
if refused then
    return refused
end
local bound = redis.call('HGET', KEYS[1], 'agent_id')
if bound and bound ~= ARGV[3] then
    return {'conflict', bound}
end
local fields = decode_strings(ARGV[7], 'job fields', true)
local cap = tonumber(ARGV[19])
if not cap then
    error('bad argument: the tenant cap is not a number')
end
-- Every check passed: from here on, only writes.
if ARGV[18] == '1' then
    ensure_session(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
end
for name, value in pairs(fields) do
    redis.call('HSET', KEYS[6], name, value)
end
redis.call('PEXPIRE', KEYS[6], ARGV[10])
emit(KEYS[7], KEYS[8], ARGV[8], ARGV[10])
emit(KEYS[7], KEYS[8], ARGV[9], ARGV[10])
redis.call('PERSIST', KEYS[10])
redis.call('RPUSH', KEYS[5], ARGV[1])
if redis.call('LINDEX', KEYS[5], 0) == ARGV[1] then
    make_ready(KEYS[14], KEYS[15], KEYS[11], KEYS[6], KEYS[10], ARGV[1], cap, ARGV[14])
end
fill_from_line(KEYS[14], KEYS[15], KEYS[11], ARGV[20], ARGV[21], cap, ARGV[14])  -- after a raised cap
if ARGV[11] ~= '' then
    redis.call('SET', KEYS[9], ARGV[11], 'PX', ARGV[12])
end
redis.call('INCR', KEYS[12])
count_rate(KEYS[13], ARGV[16], ARGV[17])
return {'accepted', ARGV[1]}
"""
)

START_TURN_REPLAY = """
-- START_TURN's call ran already (its reply was lost and the client sent it again): the same answer.
local started = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'start_call')
if started[1] == 'started' and started[3] == ARGV[3] then
    return {'started', tonumber(started[2]), redis.call('HGETALL', KEYS[1])}
end
"""

# START_TURN writes the only events not built by events.encode: `status` (events.EventType.STATUS) `started`,
# and `retrying` with its `attempt`, as Lua literals (cjson.encode).
START_TURN = (
    _EMIT
    + """
-- KEYS: 1 job, 2 events, 3 live channel
-- ARGV: 1 now_ms, 2 retention_ms, 3 call id (names this call: START_TURN_REPLAY answers its retry)
-- Marks the turn started and counts the attempt. The attempt number fences later writes: a
-- worker presumed dead whose turn was retried elsewhere can no longer emit or commit.
-- Returns {'started', attempt, the job hash as a flat list} (saving the worker a read) |
--         {'final', 0} (already finished, failed or canceled) | {'missing', 0}.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
    return {'missing', 0}
end
if status == 'finished' or status == 'failed' or status == 'canceled' then
    return {'final', 0}
end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'status', 'started', 'start_call', ARGV[3])
if attempt == 1 then
    redis.call('HSET', KEYS[1], 'started_at', ARGV[1])
    emit(KEYS[2], KEYS[3], cjson.encode({type = 'status', message = 'started'}), ARGV[2])
else
    emit(KEYS[2], KEYS[3], cjson.encode({type = 'status', message = 'retrying', attempt = attempt}), ARGV[2])
end
return {'started', attempt, redis.call('HGETALL', KEYS[1])}
"""
)

EMIT_TURN_EVENT = (
    _EMIT
    + """
-- KEYS: 1 job, 2 events, 3 live channel
-- ARGV: 1 attempt, 2 event JSON, 3 retention_ms, 4 call id (one per batch of events),
--       5 the event's index in its call (1, 2, ...)
-- Emits only while this attempt is the running one. Returns the event id, 1 when this call already
-- wrote this event (a batch sent again after a lost reply: nothing is written twice), or false when
-- the turn was canceled, finished or taken over by a newer attempt (the worker then stops).
local state = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'emitted')
if state[1] ~= 'started' or state[2] ~= ARGV[1] then
    return false
end
local index = tonumber(ARGV[5])
if not index then
    error('bad argument: the event index is not a number')
end
local call, written = string.match(state[3] or '', '^(%S+) (%d+)$')
if call == ARGV[4] and tonumber(written) >= index then
    return 1
end
redis.call('HSET', KEYS[1], 'emitted', ARGV[4] .. ' ' .. index)
return emit(KEYS[2], KEYS[3], ARGV[2], ARGV[3])
"""
)

FINISH_TURN_REPLAY = """
-- FINISH_TURN's call ran already and ended the turn (its reply was lost and the client sent it again).
if redis.call('HGET', KEYS[1], 'finish_call') == ARGV[18] then
    return 1
end
"""

FINISH_TURN = (
    _EMIT
    + _DECODE
    + _TENANT_LINE
    + """
-- KEYS: 1 job, 2 events, 3 live channel, 4 lane, 5 messages, 6 session, 7 RQ queue, 8 RQ job hash,
--       9 tenant's in-flight counter, 10 the session's images, 11 tenant's admitted counter,
--       12 tenant's line, 13 the turn's tool runs, 14 the turn's pending notes, 15 the session's notes
-- ARGV: 1 job_id, 2 final status (finished|failed|canceled), 3 now_ms, 4 attempt ('' = whichever),
--       5 result JSON, 6 error text, 7 error code, 8 messages (JSON array of message JSON strings),
--       9 events (JSON array of event JSON strings), 10 retention_ms, 11 RQ job key prefix,
--       12 RQ enqueued_at text, 13 the turn's images (JSON object ref -> data URI; '' = none),
--       14 the messages' tokens (added to the session's unsummarised `tokens`),
--       15 the tenant's cap of admitted turns (0 = no cap), 16 the tenant's job key prefix,
--       17 how many notes a session keeps, 18 call id (names this call: FINISH_TURN_REPLAY answers its retry)
-- Ends a turn exactly once: records the outcome, commits its messages, images and pending notes
-- (only when finished), emits its last events (ending with `done`), gives back its place (admitted
-- or in the tenant's line), leaves the lane, makes the lane's next turn ready and admits turns
-- from the tenant's line while the tenant has free places. Its tool runs expire with the job.
-- Returns 1 when this call ended the turn, 0 when it had already ended (or another attempt runs).
-- A bad argument raises before any write: the turn stays as it was, and may be ended again.
local state = redis.call('HMGET', KEYS[1], 'status', 'attempt')
local status, attempt = state[1], state[2]
if not status or status == 'finished' or status == 'failed' or status == 'canceled' then
    return 0
end
if ARGV[4] ~= '' and (status ~= 'started' or attempt ~= ARGV[4]) then
    return 0
end
local final = ARGV[2]
if final ~= 'finished' and final ~= 'failed' and final ~= 'canceled' then
    error('bad argument: unknown final status')
end
local messages = decode_strings(ARGV[8], 'messages')
local payloads = decode_strings(ARGV[9], 'events')
local images = {}
if ARGV[13] ~= '' then
    images = decode_strings(ARGV[13], 'images', true)
end
local tokens, cap, max_notes = tonumber(ARGV[14]) or 0, tonumber(ARGV[15]), tonumber(ARGV[17])
if not cap or not max_notes then
    error('bad argument: the tenant cap and the notes kept must be numbers')
end
-- Every check passed: from here on, only writes.
if final == 'finished' and redis.call('EXISTS', KEYS[6]) == 1 then
    for _, message in ipairs(messages) do
        redis.call('RPUSH', KEYS[5], message)
    end
    for ref, uri in pairs(images) do
        redis.call('HSETNX', KEYS[10], ref, uri)  -- stored once, however many turns send it
    end
    redis.call('HINCRBY', KEYS[6], 'exchanges', 1)
    redis.call('HINCRBY', KEYS[6], 'tokens', tokens)
    local notes = redis.call('LRANGE', KEYS[14], -max_notes, -1)  -- older ones would be trimmed anyway
    if #notes > 0 then
        for _, note in ipairs(notes) do
            redis.call('RPUSH', KEYS[15], note)
        end
        redis.call('LTRIM', KEYS[15], -max_notes, -1)
    end
end
redis.call('DEL', KEYS[14])  -- a turn that did not finish in a session keeps none of its notes
redis.call('PEXPIRE', KEYS[13], ARGV[10])
redis.call('HSET', KEYS[1], 'status', final, 'ended_at', ARGV[3], 'result', ARGV[5],
           'error', ARGV[6], 'error_code', ARGV[7], 'finish_call', ARGV[18])
redis.call('PEXPIRE', KEYS[1], ARGV[10])  -- kept as long as its events: retention counts from the end
for _, payload in ipairs(payloads) do
    emit(KEYS[2], KEYS[3], payload, ARGV[10])
end
if final == 'canceled' and status == 'queued' then
    -- Not started yet (in RQ's queue, in the tenant's line or deferred in its lane): no worker
    -- may pick it up, and nothing else will ever end RQ's record of it, so it expires.
    redis.call('LREM', KEYS[7], 0, ARGV[1])
    redis.call('HSET', KEYS[8], 'status', 'canceled')
    redis.call('PEXPIRE', KEYS[8], ARGV[10])
end
release_place(KEYS[11], KEYS[12], KEYS[1], ARGV[1])
if redis.call('DECR', KEYS[9]) < 0 then
    redis.call('SET', KEYS[9], 0)
end
redis.call('LREM', KEYS[4], 1, ARGV[1])
local head = redis.call('LINDEX', KEYS[4], 0)
if head then
    local head_key, head_rq_key = ARGV[16] .. head, ARGV[11] .. head
    -- Only a head that holds nothing yet: it may already be admitted or in the line.
    if redis.call('HGET', head_rq_key, 'status') == 'deferred' and not redis.call('HGET', head_key, 'place') then
        make_ready(KEYS[11], KEYS[12], KEYS[7], head_key, head_rq_key, head, cap, ARGV[12])
    end
end
fill_from_line(KEYS[11], KEYS[12], KEYS[7], ARGV[16], ARGV[11], cap, ARGV[12])
return 1
"""
)


def first_run_only(replay: str, script: str) -> str:
    """`script` behind `replay`, a Lua block that returns the first run's answer when this call already
    ran. In front of the whole script (a telemetry wrapper included), so a second run writes nothing."""
    return f"{replay}\nlocal function first_run()\n{script}\nend\nreturn first_run()\n"
