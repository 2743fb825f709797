-- A tenant's daily token budget, checked before anything is written (accept_turn.lua and the summary's
-- admit_report.lua): `spent` is keys.budget_spent(tenant, today), `budget` the tenant's tokens per day as text
-- ('' for a tenant with no budget). Returns nil when the day is not spent, else {'budget_exceeded', spent}.
local function over_budget(spent, budget)
    if budget == '' then
        return nil
    end
    local limit = tonumber(budget)
    if not limit then
        error('bad argument: the budget is not a number')
    end
    local used = tonumber(redis.call('GET', spent) or '0') or 0
    if used >= limit then
        return {'budget_exceeded', tostring(used)}
    end
    return nil
end
