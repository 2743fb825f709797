"""What a turn's agent loop spent, for its tenant's usage (shared/usage.py): read from the loop when it ends,
however it ends (run.py `_run_loop`'s finally), and counted in the step that ends the turn (FINISH_TURN)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from parley.shared.settings import Settings
from parley.shared.usage import turn_counts

if TYPE_CHECKING:
    from .loop import AgentLoop


@dataclass
class Spent:
    """The tokens the model reported over the turn (the steps before a pause included: the loop resumes with
    them) and the model that answered. `usage` stays None while no agent loop ran."""

    model: str
    usage: dict[str, int] | None = None

    def took(self, loop: AgentLoop) -> None:
        """What `loop` reported, once it ended (answered, failed, paused or stopped)."""
        self.usage, self.model = dict(loop.usage), loop.model

    def finished(self, settings: Settings) -> dict[str, int]:
        """The counts of a turn that finished: it counts even when it called no model (its usage is 0)."""
        return turn_counts(self.usage, self.model, settings.prices)

    def failed(self, settings: Settings) -> dict[str, int] | None:
        """The counts of a turn that failed: counted once its loop ran (the tokens were spent), else not."""
        return None if self.usage is None else self.finished(settings)
