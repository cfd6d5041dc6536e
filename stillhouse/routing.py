"""Which model answers a request: pure functions over the task's config and routing state.

Until the lifecycle controller publishes a routing table, every task routes to its teacher;
the route's reason says why, and is stored with the call.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import TaskConfig
from .store.records import Role


@dataclass(frozen=True, slots=True)
class Route:
    role: Role
    model: str  # a model name from stillhouse.toml
    reason: str


def choose_route(task: TaskConfig) -> Route:
    if task.mode == "teacher":
        return Route("teacher", task.teacher, "mode:teacher")
    if task.student is None:
        return Route("teacher", task.teacher, "no-student")
    return Route("teacher", task.teacher, "grace")
