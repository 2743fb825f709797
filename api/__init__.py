"""The `web` process: the FastAPI app (`parley.api.main:app`).

`service/` holds what every protocol shares (accepting a turn and waiting for its end, starting a
session, its summary); `routes/` Parley's own `/api/v1` (plus operations and the UI); `adapters/`
other protocols over the same service (OpenAI's, the seed article's); `hub.py` and `streams.py` the
event streams; `deps.py`, `errors.py` and `middleware.py` the edges; `runtime.py` what the process
builds once at start.
"""
