"""What a turn's agent loop spent, for its tenant's usage (shared/usage.py): read from the loop when it ends,
however it ends (run.py `_run_loop`'s finally), and counted in the step that ends the turn (FINISH_TURN)."""

from __future__ import annotations

from dataclasses import dataclass, field
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
    by_model: dict[str, dict[str, int]] = field(default_factory=dict)
    """This attempt's usage by the model that answered each step (an agent's fallback_models: worker/providers/
    fallback.py), so each step is priced at its own model's price."""

    def took(self, loop: AgentLoop) -> None:
        """What `loop` reported, once it ended (answered, failed, paused or stopped)."""
        self.usage, self.model = dict(loop.usage), loop.models.answered or loop.model
        self.by_model = {model: dict(usage) for model, usage in loop.models.usage_by_model.items()}

    def finished(self, settings: Settings) -> dict[str, int]:
        """The counts of a turn that finished: it counts even when it called no model (its usage is 0). Its cost
        prices each model's steps at that model's price; steps before a pause (in `usage`, not in `by_model`) at
        the answering model's."""
        counts = turn_counts(self.usage, self.model, settings.prices)
        if self.by_model:
            rest = dict(self.usage or {})
            cost = 0
            for model, usage in self.by_model.items():
                cost += turn_counts(usage, model, settings.prices)["cost"]
                for name, count in usage.items():
                    rest[name] = rest.get(name, 0) - count
            counts["cost"] = cost + turn_counts(rest, self.model, settings.prices)["cost"]
        return counts

    def failed(self, settings: Settings) -> dict[str, int] | None:
        """The counts of a turn that failed: counted once its loop ran (the tokens were spent), else not."""
        return None if self.usage is None else self.finished(settings)
