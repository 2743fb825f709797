"""Ending a process's background tasks (the worker's side tasks, the web's event hub and metrics reporter)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("parley")

CANCEL_AGAIN_S = 0.1
"""How often `cancel_until_done` cancels a task again that did not end."""
CANCEL_GIVE_UP_S = 5.0
"""How long `cancel_until_done` keeps at it."""


async def cancel_until_done(tasks: list[asyncio.Task[Any]], give_up_s: float = CANCEL_GIVE_UP_S) -> None:
    """Cancel `tasks` and wait for them to end, cancelling again every CANCEL_AGAIN_S while one runs on.

    One cancel is not always enough: redis-py's asyncio client can lose a cancel that arrives while a command is in
    flight (redis-py #2028; seen with redis 8.1.0, about one cancel in two in a loop of short commands), and a task
    that looks at Redis every second then goes on looping, so the worker never got past its drain. Past
    `give_up_s` the tasks still running are logged and left: a process that is stopping is not held up by them."""
    pending = {task for task in tasks if not task.done()}
    deadline = asyncio.get_running_loop().time() + give_up_s
    while pending:
        for task in pending:
            task.cancel()
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            log.warning("task(s) %s did not end when cancelled; left running",
                        ", ".join(sorted(task.get_name() for task in pending)))  # fmt: skip
            return
        _, pending = await asyncio.wait(pending, timeout=min(CANCEL_AGAIN_S, left))
