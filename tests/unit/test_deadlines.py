"""The worker's job timeout: one shared timer thread raises in the job's own thread, and only there."""

from __future__ import annotations

import threading
import time

from rq.timeouts import JobTimeoutException

from parley.worker.deadlines import _DEADLINES, SharedTimerDeathPenalty


def test_a_job_past_its_timeout_gets_the_exception_in_its_own_thread() -> None:
    outcome: dict[str, str] = {}

    def job(name: str, seconds: float) -> None:
        try:
            with SharedTimerDeathPenalty(0.3, JobTimeoutException):
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    time.sleep(0.01)
            outcome[name] = "done"
        except JobTimeoutException:
            outcome[name] = "timed out"

    threads = [threading.Thread(target=job, args=("slow", 3.0)), threading.Thread(target=job, args=("quick", 0.05))]
    before = threading.active_count()
    for thread in threads:
        thread.start()
    assert threading.active_count() <= before + 3  # the two jobs and one timer thread, not one per job
    for thread in threads:
        thread.join(5)
    assert outcome == {"slow": "timed out", "quick": "done"}


def test_a_cancelled_deadline_never_fires() -> None:
    with SharedTimerDeathPenalty(0.1, JobTimeoutException):
        pass
    time.sleep(0.3)  # an exception raised in this thread now would fail the test


def test_zero_means_no_timeout() -> None:
    with SharedTimerDeathPenalty(0, JobTimeoutException):
        time.sleep(0.05)
    assert not _DEADLINES._heap


def test_cancelled_deadlines_leave_the_heap() -> None:
    penalties = [SharedTimerDeathPenalty(60, JobTimeoutException) for _ in range(200)]
    for penalty in penalties:
        penalty.setup_death_penalty()
    for penalty in reversed(penalties):
        penalty.cancel_death_penalty()
    assert not _DEADLINES._heap and not _DEADLINES._live
