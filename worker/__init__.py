"""The `worker` process: RQ workers that run chat turns and summary jobs.

Rooms: `turn/` (one chat turn: context, agent loop, structured answers, the RQ job that runs and
commits it), `memory/` (the window a turn remembers; the rolling and requested summaries),
`providers/` (the models: base types, OpenAI-compatible, offline demo). The process itself:
`__main__.py` builds the parts once, `runtime.py` holds them and hands them to every job,
`rq_worker.py` runs many turns at once on threads, `deadlines.py` times jobs out. `summary.py`
keeps the summary jobs' import path, which RQ stores in Redis with each queued job.
"""
