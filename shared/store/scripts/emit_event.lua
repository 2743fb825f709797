-- EMIT_EVENT (worker, a summary report's events): append one event to a job's stream and publish it live,
-- as a turn's events go but without the attempt fence (a summary job has no attempts to fence).
-- uses: emit
-- KEYS: 1 events, 2 live_channel
-- ARGV: 1 event, 2 retention_ms
-- Returns the event's stream id.
return emit(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
