"""The `web` process: the FastAPI app (`parley.api.main:app`)."""
