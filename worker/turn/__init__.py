"""One chat turn: its context (context.py), the agent loop (loop.py) with structured answers
(structured.py), the events sent from a side thread (emitter.py), the watch for cancels and idle
models (cancel_watch.py), and the RQ job that runs it all and commits (run.py).

RQ names a job's function by import path, and that path is stored in Redis with every queued
job (shared/store/turns.py: TURN_FUNCTION, TURN_FAILURE_CALLBACK). Jobs queued before this package
existed name `parley.worker.turn.run_turn` and `parley.worker.turn.on_turn_failure`, so this
package exposes both at that path.
"""

from .run import on_turn_failure, run_turn

__all__ = ["on_turn_failure", "run_turn"]
