-- Decode a JSON argument that must be an array of strings (what = its name, for the error), or
-- an object of strings when as_map is true. Raises before anything is written (scripts/__init__.py,
-- "Whole or not at all").
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
