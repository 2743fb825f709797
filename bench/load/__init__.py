"""Load benchmark: many turns in flight against a slow model, idle SSE streams, drain under load.

``python -m bench load`` (``make bench`` stays ``python -m bench``, the ``turn`` benchmark).
docs/benchmarks.md ("Load") has the method and the figures.

* ``bench.load.run``      the run: the phases in order (its report and targets are in bench/report.py).
* ``bench.load.clients``  asyncio clients: streaming turns, the model on its own, idle SSE streams.
* ``bench.load.probe``    what the processes use: RSS and PSS sampled during a phase, Redis command counts.
* ``bench.load.pool``     rq's ``WorkerPool`` of one-turn-at-a-time ``SimpleWorker`` processes, for comparison
                          (run by bench/stack.py's ``start_pool`` as ``python -m bench.load.pool``).
"""
