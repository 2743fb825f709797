-- turn_end (snippet): a turn's end for its tenant's webhooks, written in the step that ends or pauses the turn,
-- so it is recorded exactly when the turn ends, whatever process dies after (worker/webhooks.py reads it).
local TURN_ENDS_MAXLEN = 100000  -- about: the stream's bound while no worker reads it
local function record_turn_end(webhooks_key, stream_key, job_key, job_id, event_type)
    if redis.call('EXISTS', webhooks_key) == 1 then
        local tenant = redis.call('HGET', job_key, 'tenant') or ''
        redis.call('XADD', stream_key, 'MAXLEN', '~', TURN_ENDS_MAXLEN, '*', 't', tenant, 'j', job_id,
                   'type', event_type)
    end
end
