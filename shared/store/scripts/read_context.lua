-- READ_CONTEXT (worker): what a turn reads before it calls the model, in one step: its agent (the tenant's,
-- else the file agent with that id) and its session's memory: length, message 0, memory fields, newest messages.
-- KEYS: 1 agent, 2 file_agent, 3 messages, 4 session
-- ARGV: 1 tail
-- KEYS are keys.<name> (file_agent: keys.agent(FILE_SCOPE, id)); tail: how many of the newest messages to read.
-- Returns {agent hash as a flat list (empty: no such agent), length, message 0 (false: none),
--          {summary, summary_upto, summary_tokens, tokens, exchanges} (session hash fields, false when absent),
--          the newest `tail` messages, oldest first}. Reads only: running it twice is harmless.
local agent = redis.call('HGETALL', KEYS[1])
if #agent == 0 then
    agent = redis.call('HGETALL', KEYS[2])
end
local total = redis.call('LLEN', KEYS[3])
local first = false
local tail = {}
if total > 0 then
    first = redis.call('LINDEX', KEYS[3], 0)
    tail = redis.call('LRANGE', KEYS[3], math.max(0, total - tonumber(ARGV[1])), total - 1)
end
local fields = redis.call('HMGET', KEYS[4], 'summary', 'summary_upto', 'summary_tokens', 'tokens', 'exchanges')
return {agent, total, first, fields, tail}
