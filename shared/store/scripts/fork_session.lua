-- FORK_SESSION (web, POST /sessions/{id}/fork): a new session of the same agent holding copies of the source's
-- committed messages 0..at, the images they name, the notes of the turns they hold, and the rolling summary when
-- it covers none past `at`; all in one step, so there is never half a fork.
-- uses: session_ttl
-- KEYS: 1 source, 2 source_messages, 3 source_notes, 4 source_images, 5 session, 6 sessions, 7 agent_sessions, 8 messages, 9 notes, 10 session_images, 11 lane, 12 session_expiries
-- ARGV: 1 session_id, 2 at, 3 now_ms, 4 max_messages, 5 session_ttl_ms, 6 expiry_member
-- KEYS are keys.<name> (source*: the forked session's; the others the new session's, agent_sessions its agent's).
-- Arguments: at: index of the last message to copy; max_messages: most messages one fork copies;
--   session_ttl_ms, expiry_member: as CREATE_SESSION's (the agent's session_ttl_s, 0 = kept).
-- Returns {'forked', agent id} | {'missing', ''} (no source session) | {'no_message', ''} (no message `at`, or
--   a replaced one) | {'exists', ''} (the new id is taken) | {'too_long', max_messages}.
-- Notes: each committed note is JSON {text, upto} (finish_turn.lua); one with upto <= at + 1 was written by a
-- turn whose messages the fork holds. Notes stored before notes carried `upto` are left out (their turn is unknown).
-- Not safe to run twice: a second run finds the new session and answers 'exists' (the caller's 409).
local agent_id = redis.call('HGET', KEYS[1], 'agent_id')
if not agent_id then
    return {'missing', ''}
end
local at, max_messages = tonumber(ARGV[2]), tonumber(ARGV[4])
if not at or not max_messages then
    error('bad argument: at and max_messages must be numbers')
end
if at < 0 or at >= redis.call('LLEN', KEYS[2]) then
    return {'no_message', ''}
end
if redis.call('EXISTS', KEYS[5]) == 1 then
    return {'exists', ''}
end
if at + 1 > max_messages then
    return {'too_long', max_messages}
end
local stored = redis.call('LRANGE', KEYS[2], 0, at)
local last = cjson.decode(stored[#stored])
if last.replaced == true then
    return {'no_message', ''}
end
local source = redis.call('HMGET', KEYS[1], 'metadata', 'summary', 'summary_upto', 'summary_tokens')
local upto = tonumber(source[3]) or 0
local keep_summary = source[2] and source[2] ~= '' and upto <= at + 1
if not keep_summary then
    upto = 0
end
-- What the copied messages hold: their images, their unsummarised tokens, their turns and replaced ones.
local refs, turns = {}, {}
local tokens, exchanges, replaced = 0, 0, 0
for index, raw in ipairs(stored) do
    local message = cjson.decode(raw)
    if message.replaced == true then
        replaced = replaced + 1
    else
        if index - 1 >= upto then
            tokens = tokens + (tonumber(message.tokens) or 0)
        end
        local job = message.job_id
        if type(job) == 'string' and not turns[job] then
            turns[job] = true
            exchanges = exchanges + 1
        end
    end
    if type(message.images) == 'table' then
        for _, ref in ipairs(message.images) do
            refs[ref] = true
        end
    end
end
-- Every check passed: from here on, only writes.
redis.call('HSET', KEYS[5], 'agent_id', agent_id, 'created_at', ARGV[3], 'metadata', source[1] or '{}',
           'exchanges', exchanges, 'tokens', tokens, 'replaced', replaced)
if keep_summary then
    redis.call('HSET', KEYS[5], 'summary', source[2], 'summary_upto', upto, 'summary_tokens', source[4] or '')
end
for first = 1, #stored, 1000 do
    redis.call('RPUSH', KEYS[8], unpack(stored, first, math.min(first + 999, #stored)))
end
for ref in pairs(refs) do
    local uri = redis.call('HGET', KEYS[4], ref)
    if uri then
        redis.call('HSET', KEYS[10], ref, uri)
    end
end
for _, raw in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
    local ok, note = pcall(cjson.decode, raw)
    if ok and type(note) == 'table' and type(note.text) == 'string' and tonumber(note.upto)
            and tonumber(note.upto) <= at + 1 then
        redis.call('RPUSH', KEYS[9], raw)
    end
end
redis.call('ZADD', KEYS[6], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[7], ARGV[3], ARGV[1])
keep_session(KEYS[12], ARGV[6], KEYS[5], KEYS[11], {KEYS[5], KEYS[8], KEYS[9], KEYS[10]}, ARGV[5], ARGV[3])
return {'forked', agent_id}
