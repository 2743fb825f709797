"""The hostile-tenant benchmark (``python -m bench hostile``): 20 tenants' turn latency on one worker, with and
without a 21st tenant running its worst turns at once. See run.py, model.py and docs/benchmarks.md."""
