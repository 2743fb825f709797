-- Regenerate's commit: mark the old answer to the session's last user message replaced (its assistant and tool
-- messages after that user message; earlier replaced ones are passed over). A replaced message keeps its place
-- (message ids are list indexes) and gains `"replaced":true` as its first field, written in front of the stored
-- JSON so nothing else of it is re-encoded. Returns how many were marked and their tokens.
local REPLACED = '{"replaced":true,'
local function replace_answer(messages_key)
    local index = redis.call('LLEN', messages_key) - 1
    local count, tokens = 0, 0
    while index >= 0 do
        local raw = redis.call('LINDEX', messages_key, index)
        if string.sub(raw, 1, #REPLACED) ~= REPLACED then
            local message = cjson.decode(raw)
            if message.role == 'user' then
                break
            end
            redis.call('LSET', messages_key, index, REPLACED .. string.sub(raw, 2))
            count = count + 1
            tokens = tokens + (tonumber(message.tokens) or 0)
        end
        index = index - 1
    end
    return count, tokens
end
