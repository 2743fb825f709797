-- CREATE_SESSION (web, POST /sessions): create a session bound to an agent.
-- uses: ensure_session
-- KEYS: 1 session, 2 sessions, 3 agent_sessions, 4 messages
-- ARGV: 1 session_id, 2 agent_id, 3 now_ms, 4 metadata, 5 first_message
-- KEYS are keys.<name>; metadata: JSON; first_message: the agent's opening line as message JSON ('' = none).
-- Returns {bound agent id, created (0|1)}.
-- Not safe to run twice: a second run (the client's retry after a lost reply) answers created 0 for
-- the session the first run created. It writes nothing more, but its caller then answers 409.
local bound, created = ensure_session(KEYS[1], KEYS[2], KEYS[3], KEYS[4],
                                      ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
return {bound, created}
