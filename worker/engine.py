"""The turn engine: one worker process runs up to `concurrency` jobs (`PARLEY_WORKER_CONCURRENCY`) as
tasks on one asyncio event loop.

A turn spends nearly all its time waiting on the model's socket, so a task per turn costs what the
turn does and no more: no thread per turn, no GIL hand-offs between them. Around the loop, a fixed
few threads do rq's blocking work, so it never delays a turn's first token:
- the *dequeue* thread takes jobs from rq's queue while a slot is free (and runs rq's maintenance,
  which finds other workers' abandoned jobs) and hands each to the loop at once;
- the *books* thread keeps rq's records of each job (rq_side.py: `begin` while the job already runs,
  `end` after it), one at a time, in order;
- the *beat* thread beats the worker's and every running job's heartbeat in one pipeline every third
  of `PARLEY_HEARTBEAT_TTL_S` (not behind the books' backlog, which a burst of jobs makes long);
- the runtime's bounded pool runs blocking work of the jobs (sync tools, sync reads).

A job function that is a coroutine function is awaited on the loop; any other runs in that pool.
Each job runs under `asyncio.timeout(job.timeout)` (past it: rq's JobTimeoutException, so rq retries
or fails it as any rq worker would) with a `JobControl` (turn/control.py) through which the engine's
*watch* stops a turn that was canceled or taken over: every `WATCH_INTERVAL_S`, one round trip asks
Redis about every running turn of the process that Redis has not vouched for meanwhile (each emit's
fence does, so a turn streaming its answer costs the watch nothing), and a turn no longer its
attempt's is cancelled (its model connection closed) and ends `stopped`.

Liveness: heartbeat entries live `PARLEY_HEARTBEAT_TTL_S`; maintenance runs every
`PARLEY_MAINTENANCE_INTERVAL_S`; a job whose worker died is retried (or failed) by rq's abandoned-job
cleanup within TTL + 2 x interval seconds: 40 s by default. A lost Redis stops the dequeue until it
answers again; running turns fail or finish on their own (their writes are fenced).

Beside the turns, side tasks on the loop: the heartbeat, the watch, the expiry of approval waits, and the firing
loop of schedules (schedules.py: this process's share of the due schedules, each firing once).

SIGTERM drains: no new job is taken, running ones may finish within `PARLEY_DRAIN_GRACE_S` (25 s,
below Kubernetes' 30 s), and the rest are handed back to the front of the queue (without using up a
retry: a deploy is not the turn's failure) to run elsewhere; then the process exits. A second signal
hands back at once.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import signal
import threading
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import redis
from rq.job import Job
from rq.queue import Queue
from rq.timeouts import JobTimeoutException
from rq.worker import WorkerStatus

from parley.shared.store.worker_turns import Attempt, WorkerTurns
from parley.shared.tasks import cancel_until_done

from .retention import sweep_forever
from .rq_side import Held, RqSide
from .schedules import ScheduleFiring
from .turn.control import CURRENT, JobControl
from .turn.loop import Stopped, in_thread
from .webhooks import Dispatcher

log = logging.getLogger("parley.worker")

DEQUEUE_WAIT_S = 1
"""How long one dequeue blocks on the queue: the dequeue thread then checks for a stop request."""
WATCH_INTERVAL_S = 0.5
"""How often the watch asks Redis whether each running turn is still its attempt's (cancel latency)."""
APPROVALS_INTERVAL_S = 1.0
"""How often a worker looks for waits for decisions that timed out (one ZRANGEBYSCORE)."""


class Engine:
    def __init__(self, rq: RqSide, *, concurrency: int, drain_grace_s: float, turns: WorkerTurns | None = None,
                 threads: Executor | None = None, burst: bool = False,
                 schedules: ScheduleFiring | None = None,
                 webhooks: Dispatcher | None = None) -> None:  # fmt: skip
        """`rq` keeps rq's records; `turns` lets the watch ask about running turns (None: no watch);
        `threads` runs sync job functions (None: the loop's default executor); `burst` ends the engine
        once the queue is empty and nothing runs (tests, and `rq`'s own burst mode); `schedules` fires this
        process's share of the due schedules (None: none); `webhooks` delivers the deployment's webhooks
        beside the turns (webhooks.py; None: this engine does not)."""
        self.rq = rq
        self.concurrency = concurrency
        self.drain_grace_s = drain_grace_s
        self.turns = turns
        self.threads = threads
        self.burst = burst
        self.schedules = schedules
        self.webhooks = webhooks
        self.running: dict[str, tuple[Held, JobControl]] = {}
        """Job id -> the job's rq records and control, for every job this process runs."""
        self._slots = threading.Semaphore(concurrency)
        self._books = ThreadPoolExecutor(1, thread_name_prefix="rq-books")
        self._beats = ThreadPoolExecutor(1, thread_name_prefix="rq-beat")
        """Heartbeats on a thread of their own: behind a backlog of the books' work (a thousand jobs
        starting at once), beats would come late and rq's maintenance would take the running jobs for
        abandoned ones."""
        self._stop = threading.Event()
        self._idle = asyncio.Event()
        """Set whenever nothing runs (a drain or a burst waits on it)."""
        self._queue_empty = False
        self._drain_deadline: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        rq.busy = lambda: bool(self.running)

    # -- the process's life ---------------------------------------------------------------

    async def run(self, logging_level: str = "INFO") -> None:
        """Take jobs until SIGTERM (or, in burst mode, an empty queue); drain; leave."""
        self._loop = loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._books, self.rq.bootstrap, logging_level)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        self._idle.set()
        dequeue = threading.Thread(target=self._dequeue_loop, name="rq-dequeue", daemon=True)
        dequeue.start()
        side = [asyncio.create_task(self._beat(), name="heartbeat")]
        if self.turns is not None:
            side.append(asyncio.create_task(self._watch(), name="watch"))
            side.append(asyncio.create_task(self._expire_approvals(), name="approvals"))
            side.append(asyncio.create_task(sweep_forever(self.turns.aio, self.turns.store.settings.session_sweep_s),
                                            name="retention"))  # fmt: skip
        if self.schedules is not None:
            side.append(asyncio.create_task(self.schedules.run(), name="schedules"))
        if self.webhooks is not None:
            side.append(asyncio.create_task(self.webhooks.run(), name="webhooks"))
        try:
            while not self._stop.is_set() and not (self.burst and self._queue_empty and not self.running):
                await asyncio.sleep(0.05 if self.burst else 0.5)
            self._stop.set()
            await self._drain()
        finally:
            await cancel_until_done(side)
            await loop.run_in_executor(None, dequeue.join)
        await loop.run_in_executor(self._books, self.rq.teardown)
        self._books.shutdown()
        self._beats.shutdown()

    def request_stop(self) -> None:
        """SIGTERM or SIGINT: take no new job; running ones get `drain_grace_s` to finish. A second signal
        hands back at once whatever still runs."""
        if self._stop.is_set():
            log.warning("second stop signal: handing back %d running turn(s) now", len(self.running))
            self._drain_deadline = time.monotonic()
            return
        log.info("stop requested: draining %d running turn(s) for up to %.0f s", len(self.running),
                 self.drain_grace_s)  # fmt: skip
        self._drain_deadline = time.monotonic() + self.drain_grace_s
        self._stop.set()

    async def _drain(self) -> None:
        """Wait for the running jobs (until the drain deadline); hand back those still running and exit."""
        while self.running:
            if self._drain_deadline is None:
                self._drain_deadline = time.monotonic() + self.drain_grace_s
            left = self._drain_deadline - time.monotonic()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=min(left, 0.2))
            except TimeoutError:
                pass
        if self.running:
            held = [one for one, _control in self.running.values()]
            log.warning("%d turn(s) still running after %.0f s of drain: handing them back", len(held),
                        self.drain_grace_s)  # fmt: skip
            try:
                self.rq.hand_back(held)
            except redis.RedisError:
                log.warning("could not hand the jobs back; rq will find them abandoned", exc_info=True)
            finally:
                logging.shutdown()
                os._exit(0)

    # -- taking jobs (the dequeue thread) -----------------------------------------------------

    def _dequeue_loop(self) -> None:
        while not self._stop.is_set():
            if not self._slots.acquire(timeout=DEQUEUE_WAIT_S):
                self._maintain()
                continue  # full: look at maintenance and stop requests again, then wait on
            taken = False
            try:
                self._maintain()
                result = self.rq.dequeue(DEQUEUE_WAIT_S)
                if result is None:
                    self._queue_empty = True
                    continue
                self._queue_empty = False
                job, queue = result
                if self._stop.is_set():
                    self.rq.put_back(job, queue)
                    return
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self._start, job, queue)
                taken = True
            except (redis.ConnectionError, redis.TimeoutError) as error:
                log.warning("lost Redis (%s); taking no job until it answers", error)
                self.rq.wait_for_redis()
            except Exception:
                log.exception("the dequeue failed; trying again")
                time.sleep(1)
            finally:
                if not taken:
                    self._slots.release()

    def _maintain(self) -> None:
        """rq's suspension check and maintenance (abandoned jobs of every worker), when due."""
        self.rq.check_for_suspension(self.burst)
        if self.rq.should_run_maintenance_tasks:
            self.rq.run_maintenance_tasks()

    # -- running one job (the loop) ---------------------------------------------------------

    def _start(self, job: Job, queue: Queue) -> None:
        self._idle.clear()
        asyncio.create_task(self._perform(Held(job, queue)), name=f"job-{job.id}")

    async def _perform(self, held: Held) -> None:
        """Run the job under its timeout and control, with rq's records kept beside it on the books thread."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        control = JobControl(task=task)
        CURRENT.set(control)
        job = held.job
        self.running[job.id] = (held, control)
        begun = loop.run_in_executor(self._books, self.rq.begin, held)  # beside the job: off its first token
        value: Any = None
        error: BaseException | None = None
        try:
            timeout_s = job.timeout or Queue.DEFAULT_TIMEOUT
            deadline = asyncio.timeout(timeout_s if timeout_s > 0 else None)
            try:
                async with deadline:
                    value = await self._call(job)
            except TimeoutError as raised:
                if not deadline.expired():
                    raise
                error = JobTimeoutException(f"Task exceeded maximum timeout value ({timeout_s} seconds)")
                error.__cause__ = raised
            except asyncio.CancelledError:
                if control.reason is None:
                    raise  # the engine itself is going away
                if isinstance(control.reason, Stopped):
                    value = "stopped"
                else:
                    error = control.reason
            except Exception as raised:
                error = raised
            try:
                await begun
                await loop.run_in_executor(self._books, self.rq.end, held, value, error)
            except Exception:  # rq's own handling could not reach Redis: the job is left to be found abandoned
                log.warning("job %s: rq could not record its end; it will be found abandoned", job.id, exc_info=True)
        finally:
            self.running.pop(job.id, None)
            self._slots.release()
            if not self.running:
                self._idle.set()
                loop.run_in_executor(self._books, self._now_idle)

    def _now_idle(self) -> None:
        """The worker shows `idle` in rq once nothing runs (as rq's own worker does between jobs)."""
        if not self.running:
            try:
                self.rq.set_state(WorkerStatus.IDLE)
            except redis.RedisError:
                log.warning("could not mark the worker idle in rq", exc_info=True)

    async def _call(self, job: Job) -> Any:
        func = job.func
        if func is None:
            raise ValueError(f"job {job.id}: its function could not be loaded")
        if inspect.iscoroutinefunction(func):
            return await func(*job.args, **job.kwargs)
        return await in_thread(self.threads, functools.partial(func, *job.args, **job.kwargs))

    # -- the side tasks ------------------------------------------------------------------------

    async def _beat(self) -> None:
        """Every third of the heartbeat TTL: the worker's and every running job's heartbeat, one round trip."""
        loop = asyncio.get_running_loop()
        interval_s = max(1.0, self.rq.heartbeat_ttl_s / 3)
        while True:
            await asyncio.sleep(interval_s)
            held = [one for one, _control in self.running.values()]
            try:
                await loop.run_in_executor(self._beats, self.rq.beat, held)
            except redis.RedisError:
                log.warning("heartbeat of %d job(s) failed; retrying in %.0f s", len(held), interval_s,
                            exc_info=True)  # fmt: skip

    async def _expire_approvals(self) -> None:
        """Every APPROVALS_INTERVAL_S: the turns whose wait for decisions timed out are denied ("timed out")
        and go on (any worker may do it; DECIDE_APPROVAL decides each call once)."""
        assert self.turns is not None
        while True:
            await asyncio.sleep(APPROVALS_INTERVAL_S)
            try:
                resumed = await self.turns.expire_approvals()
            except redis.RedisError:
                log.warning("could not look for approvals that timed out; trying again", exc_info=True)
                continue
            if resumed:
                log.info("%d turn(s) waited for decisions past PARLEY_APPROVAL_TIMEOUT_S: denied, resumed", resumed)

    async def _watch(self) -> None:
        """Stop the running turns that are no longer their attempt's (canceled, ended elsewhere, superseded)."""
        assert self.turns is not None
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            quiet_since = asyncio.get_running_loop().time() - WATCH_INTERVAL_S
            watched = [control for _held, control in self.running.values()
                       if control.attempt is not None and not control.committing and control.reason is None
                       and control.confirmed_at <= quiet_since]  # fmt: skip
            if not watched:
                continue
            attempts: list[Attempt] = [control.attempt for control in watched]  # type: ignore[misc]
            try:
                still = await self.turns.running(attempts)
            except redis.RedisError:
                continue  # asked again next time; the turns' own writes are fenced meanwhile
            for control, running in zip(watched, still, strict=True):
                if not running:
                    control.stop(Stopped())
