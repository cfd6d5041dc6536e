"""What the controller asks of the rest of the product, as one protocol: the long steps (curate,
optimize, train, validate) and what it asks of curation and review (grace readiness, new distinct
examples after a failed gate, intent clustering for drift, the review queue). The lifecycle stays
a state machine over the store; `stillhouse.worker.DefaultSteps` composes the real parts, tests
pass small fakes.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..config import Config
from ..store.base import TraceStore
from ..store.records import Verdict

__all__ = ["Steps", "Verdict"]


class Steps(Protocol):
    def curate(self, store: TraceStore, config: Config, task: str) -> str:
        """Curate the task's captured calls into a dataset; its id."""
        ...

    def optimize(self, store: TraceStore, config: Config, task: str, dataset_id: str) -> str:
        """Register a prompt candidate built from the dataset; its id."""
        ...

    def train(
        self, store: TraceStore, config: Config, task: str, dataset_id: str, parent: str | None
    ) -> str:
        """Train and register a candidate on the dataset; its id."""
        ...

    def validate(
        self, store: TraceStore, config: Config, task: str, candidate: str, incumbent: str | None
    ) -> Verdict:
        """Evaluate the candidate on its holdout (against `incumbent`) and apply the gate."""
        ...

    def readiness(self, store: TraceStore, config: Config, now: float) -> dict[str, Any]:
        """Each task's grace readiness: {task: {"ready": bool, "met": {criterion: bool}, ...}}."""
        ...

    def new_examples(self, store: TraceStore, config: Config, task: str, since: float) -> int:
        """Distinct requests among the task's teacher calls since `since` that no earlier call
        made (curation's duplicate key): what a failed gate or a rollback waits for."""
        ...

    def after_tick(self, store: TraceStore, config: Config) -> None:
        """Work after every pass that is no task's transition (filling the review queue)."""
        ...

    def cluster(self, texts: list[str]) -> list[str]:
        """One intent label per text, clustered the way curation does (for the drift monitor's
        intent shift when callers send no metadata.intent)."""
        ...
