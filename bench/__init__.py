"""Parley's benchmarks: ``python -m bench <subcommand>`` (or ``make bench``, the default ``turn``) starts the
whole system and measures it.  See docs/benchmarks.md for the method and the latest figures.

Modules:

* ``bench.__main__``      the one command: ``turn`` (default), ``load``, ``hostile``, ``rebuild``,
                          ``rq-compare``, ``trace``, ``profile``, ``redis-ceiling``.
* ``bench.stack``         the one stack: Redis, model servers, ``web`` and ``worker`` processes (from the
                          Procfile, via tests/harness.py on parley.local's process supervisor), configured
                          for each benchmark (tenants, webs, workers, a worker pool, model, settings).
* ``bench.report``        the one report: every benchmark's markdown tables, targets and JSON results.
* ``bench.turn``          the default benchmark: latency, streaming, throughput, peak RSS, RQ worker classes.
* ``bench.load``          many turns in flight, a drain under load, rq's WorkerPool, idle SSE streams.
* ``bench.hostile``       one hostile tenant against 20 others on one worker (and its model server).
* ``bench.rebuild``       a turn's context rebuilt from 100 vs 100,000 messages.
* ``bench.ceiling``       how many turns per second one Redis core carries with Parley's real command mix
                          (docs/scaling.md).
* ``bench.timed_model``   a minimal OpenAI-compatible streaming server that writes the wall
                          time at which it sent each answer's first content chunk into that chunk.
* ``bench.measure``       the measurements (latency, streaming, throughput) and statistics.
* ``bench.trace``         the anatomy of a turn from Redis MONITOR.
* ``bench.profile``       py-spy profiles of web and workers, and their summaries.
* ``bench.rq_compare``    RQ's forking ``Worker`` against ``SimpleWorker``: per-job cost.
* ``bench.sysinfo``       CPU, cores, Python and Redis versions.
"""

from __future__ import annotations
