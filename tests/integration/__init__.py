"""Integration tests: real Redis, web, worker and model-server processes."""
