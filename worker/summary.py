"""The summary jobs at the import path RQ knows them by.

RQ names a job's function by import path, and that path is stored in Redis with every queued job
(shared/store/memory.py: SUMMARY_FUNCTION, REPORT_FUNCTION name `parley.worker.summary.roll_summary`
and `parley.worker.summary.summarise_session`). Their home is worker/memory/summary.py; this
module keeps the stored paths resolving.
"""

from .memory.summary import roll_summary, summarise_session

__all__ = ["roll_summary", "summarise_session"]
