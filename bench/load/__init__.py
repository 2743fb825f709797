"""Load benchmark: many turns in flight against a slow model, idle SSE streams, drain under load.

``python -m bench.load`` (``make bench`` stays ``python -m bench``, the latency benchmark).
docs/benchmarks.md ("Load") has the method and the figures.

* ``bench.load.__main__``  the run: the phases in order, the report, ``bench/load_results.json``.
* ``bench.load.stack``     several ``web`` and ``worker`` processes over bench/stack.py's Redis and model.
* ``bench.load.clients``   asyncio clients: streaming turns, the model on its own, idle SSE streams.
* ``bench.load.probe``     what the processes use: RSS and PSS sampled during a phase, Redis command counts.
* ``bench.load.report``    the markdown report and the targets.
* ``bench.load.pool``      rq's ``WorkerPool`` of one-turn-at-a-time ``SimpleWorker`` processes, for comparison.
"""
