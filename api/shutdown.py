"""Tell the app when its server is told to stop, before the server waits for open connections.

uvicorn installs its SIGTERM/SIGINT handlers (with `signal.signal`) before the app's lifespan
starts, and on a signal it stops accepting and then waits for open responses to end. SSE streams
never end by themselves, so the app needs the news first: this wraps uvicorn's handlers.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType


def on_stop_signal(callback: Callable[[], None]) -> None:
    """Run `callback` in the event loop on SIGTERM or SIGINT, then the handler that was there."""
    if threading.current_thread() is not threading.main_thread():
        return  # signals reach only the main thread's handlers (e.g. not under a test client)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: FrameType | None, previous: object = previous) -> None:
            loop.call_soon_threadsafe(callback)
            if callable(previous):
                previous(signum, frame)

        signal.signal(sig, handler)
