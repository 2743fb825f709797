-- RELEASE_REPORT (worker, a report's end): free the session for the next report, if this job still holds it.
-- KEYS: 1 summary_report
-- ARGV: 1 job_id
-- summary_report: the session's report lock (keys.summary_report); job_id: the job that took it.
-- Returns 1 when released.
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
