"""The `worker` process: an asyncio engine over RQ that runs chat turns and summary jobs.

Rooms: `turn/` (one chat turn: context, agent loop, structured answers, the RQ job that runs and
commits it), `memory/` (the window a turn remembers; the rolling and requested summaries),
`providers/` (the models: base types, OpenAI-compatible, offline demo). The process itself:
`__main__.py` builds the parts once, `runtime.py` holds them and hands them to every job,
`engine.py` runs many jobs at once as tasks on one event loop, `rq_side.py` keeps rq's records of
them. `summary.py` keeps the summary jobs' import path, which RQ stores in Redis with each queued job.
"""
