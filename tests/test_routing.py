"""Routing decisions as pure functions: sticky buckets, the student share, modes, confidence
fallback and shadow sampling."""

from __future__ import annotations

from stillhouse.config import TaskConfig
from stillhouse.routing import (
    RoutingTable,
    TaskRoute,
    bucket,
    choose_route,
    needs_fallback,
    shadow_sampled,
)

TASK = TaskConfig(teacher="big", student="small")


def test_a_session_keeps_its_bucket_and_buckets_spread_evenly() -> None:
    assert bucket("support", "user-1") == bucket("support", "user-1")
    assert bucket("support", "user-1") != bucket("other", "user-1")
    values = [bucket("support", f"user-{i}") for i in range(4000)]
    assert all(0 <= v < 1 for v in values)
    assert 0.47 < sum(v < 0.5 for v in values) / len(values) < 0.53


def test_the_share_decides_and_a_growing_share_never_moves_a_student_session_back() -> None:
    keys = [f"s{i}" for i in range(2000)]

    def students(share: float) -> set[str]:
        entry = TaskRoute(state="rollout", share=share)
        return {k for k in keys if choose_route(TASK, entry, name="t", key=k).role == "student"}

    quarter, half = students(0.25), students(0.5)
    assert 0.22 < len(quarter) / len(keys) < 0.28 and 0.47 < len(half) / len(keys) < 0.53
    assert quarter <= half
    assert students(0.0) == set() and students(1.0) == set(keys)
    route = choose_route(TASK, TaskRoute(state="rollout", share=0.25), name="t", key="s1")
    assert route.reason in ("rollout:25%", "rollout")


def test_modes_override_the_share() -> None:
    assert choose_route(TASK).reason == "grace"
    assert choose_route(TaskConfig(teacher="big")).reason == "no-student"
    teacher_mode = TaskRoute(state="serving", share=1.0, mode="teacher")
    assert choose_route(TASK, teacher_mode, key="k").role == "teacher"
    student_mode = TaskRoute(state="grace", share=0.0, mode="student")
    assert choose_route(TASK, student_mode, key="k").role == "student"
    config_mode = TaskConfig(teacher="big", student="small", mode="teacher")
    assert choose_route(config_mode, TaskRoute(share=1.0), key="k").role == "teacher"


def _sure(p10: float, **others: float) -> dict[str, float]:
    return {"p10": p10, "min": p10, "mean": p10, **others}


def test_fallback_only_under_the_threshold_in_auto_mode() -> None:
    entry = TaskRoute(state="rollout", share=1.0, threshold=0.6)
    student = choose_route(TASK, entry, key="k")
    assert needs_fallback(TASK, entry, student, _sure(0.2))
    assert not needs_fallback(TASK, entry, student, _sure(0.9))
    assert not needs_fallback(TASK, entry, student, None)  # no confidence reported
    assert not needs_fallback(TASK, TaskRoute(share=1.0), student, _sure(0.2))  # no threshold
    pinned = TaskRoute(share=1.0, threshold=0.6, mode="student")
    assert not needs_fallback(TASK, pinned, choose_route(TASK, pinned, key="k"), _sure(0.2))
    off = TaskConfig(teacher="big", student="small", routing={"fallback": "none"})
    assert not needs_fallback(off, entry, student, _sure(0.2))
    teacher = choose_route(TASK, TaskRoute(share=0.0, threshold=0.6), key="k")
    assert not needs_fallback(TASK, entry, teacher, _sure(0.2))


def test_fallback_reads_the_signal_its_threshold_was_calibrated_on() -> None:
    on_min = TaskRoute(state="rollout", share=1.0, threshold=0.6, signal="min")
    student = choose_route(TASK, on_min, key="k")
    sure_on_p10_only = _sure(0.9, min=0.2)
    assert needs_fallback(TASK, on_min, student, sure_on_p10_only)
    on_p10 = TaskRoute(state="rollout", share=1.0, threshold=0.6)
    assert not needs_fallback(TASK, on_p10, student, sure_on_p10_only)


def test_shadow_sampling_rate_and_only_for_student_calls() -> None:
    task = TaskConfig(teacher="big", student="small", routing={"shadow_rate": 0.1})
    hits = sum(shadow_sampled(task, "student", f"call_{i}") for i in range(5000))
    assert 400 < hits < 600
    assert not any(shadow_sampled(task, "teacher", f"call_{i}") for i in range(500))
    assert shadow_sampled(task, "student", "call_7") == shadow_sampled(task, "student", "call_7")


def test_the_table_is_replaced_whole() -> None:
    table = RoutingTable()
    assert table.get("t") is None
    table.update("t", TaskRoute(share=0.1))
    old = table.snapshot()
    table.publish({"u": TaskRoute(share=0.2)})
    assert table.get("t") is None and table.get("u") == TaskRoute(share=0.2)
    assert old == {"t": TaskRoute(share=0.1)}
