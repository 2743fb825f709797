"""Parley's own routes: one router per resource of `/api/v1`, plus operations (`ops.py`) and the web UI
(`ui.py`). Other protocols' routes are adapters (`api/adapters/`); what both share is `api/service/`."""
