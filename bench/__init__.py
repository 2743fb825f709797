"""Parley's benchmarks: ``python -m bench`` (or ``make bench``) starts the whole system and
measures it.  See docs/benchmarks.md for the method and the latest figures.

Modules:

* ``bench.stack``         Redis, model servers, ``web`` and ``worker`` (from the Procfile, via
                          tests/harness.py), cleaned up on exit.
* ``bench.timed_model``   a minimal OpenAI-compatible streaming server that writes the wall
                          time at which it sent each answer's first content chunk into that chunk.
* ``bench.measure``       the measurements (latency, streaming, throughput) and statistics.
* ``bench.rq_compare``    RQ's forking ``Worker`` against ``SimpleWorker``: per-job cost.
* ``bench.sysinfo``       CPU, cores, Python and Redis versions.
"""

from __future__ import annotations
