-- CREATE_SESSION (web, POST /sessions): create a session bound to an agent.
-- uses: ensure_session, session_ttl
-- KEYS: 1 session, 2 sessions, 3 agent_sessions, 4 messages, 5 lane, 6 session_expiries
-- ARGV: 1 session_id, 2 agent_id, 3 now_ms, 4 metadata, 5 first_message, 6 session_ttl_ms, 7 expiry_member
-- KEYS are keys.<name>; metadata: JSON; first_message: the agent's opening line as message JSON ('' = none);
-- session_ttl_ms: the agent's session_ttl_s in ms (0 = kept); expiry_member: keys.session_expiry_member.
-- Returns {bound agent id, created (0|1)}.
-- Not safe to run twice: a second run (the client's retry after a lost reply) answers created 0 for
-- the session the first run created. It writes nothing more, but its caller then answers 409.
local bound, created = ensure_session(KEYS[1], KEYS[2], KEYS[3], KEYS[4],
                                      ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
if created == 1 then
    keep_session(KEYS[6], ARGV[7], KEYS[1], KEYS[5], {KEYS[1], KEYS[4]}, ARGV[6], ARGV[3])
end
return {bound, created}
