"""The trace store on SQLite and on PostgreSQL: schema, idempotent inserts, reads."""

from __future__ import annotations

import sqlite3

import pytest

from stillhouse.errors import StoreError
from stillhouse.store import Call, Score, new_id, open_store
from stillhouse.store.schema import LATEST_VERSION


def make_call(task: str = "support", role: str = "teacher", **kw) -> Call:
    return Call(
        id=kw.pop("id", new_id("call")),
        task=task,
        role=role,  # type: ignore[arg-type]
        request={"model": task, "messages": [{"role": "user", "content": "héllo ✓"}]},
        response={"choices": [{"message": {"role": "assistant", "content": "hi"}}]},
        model="teacher",
        provider="openai",
        upstream_model="gpt-4.1",
        route_reason="grace",
        input_tokens=3,
        output_tokens=1,
        latency_ms=12.5,
        metadata={"intent": "greeting", "nested": {"a": [1, 2]}},
        **kw,
    )


def test_round_trip_keeps_every_field(store_url: str) -> None:
    call = make_call(
        session_key="s1",
        confidence=-0.25,
        cost=0.001,
        ttft_ms=3.0,
        stream=True,
        finish_reason="stop",
    )
    with open_store(store_url) as store:
        assert store.schema_version() == LATEST_VERSION
        store.insert_calls([call])
        assert store.get_call(call.id) == call


def test_inserts_are_idempotent(store_url: str) -> None:
    call = make_call()
    with open_store(store_url) as store:
        store.insert_calls([call, make_call()])
        store.insert_calls([call])  # a replay
        assert store.count_calls() == {"support": {"teacher": 2}}


def test_counts_and_listing(store_url: str) -> None:
    with open_store(store_url) as store:
        store.insert_calls(
            [make_call(created_at=100.0 + i) for i in range(3)]
            + [make_call(role="student", created_at=200.0)]
            + [make_call(task="triage", created_at=50.0)]
        )
        assert store.count_calls() == {
            "support": {"teacher": 3, "student": 1},
            "triage": {"teacher": 1},
        }
        newest = store.list_calls(task="support", limit=2)
        assert [c.created_at for c in newest] == [200.0, 102.0]
        assert [c.role for c in store.list_calls(role="student")] == ["student"]


def test_scores_and_counters(store_url: str) -> None:
    call = make_call()
    score = Score(
        id=new_id("score"),
        call_id=call.id,
        name="thumbs",
        value=-1.0,
        source="human",
        comment="wrong intent",
    )
    with open_store(store_url) as store:
        store.insert_calls([call])
        store.insert_scores([score, score])
        assert store.scores_for(call.id) == [score]
        assert store.counter("captures_dropped") == 0
        store.add_counter("captures_dropped", 2)
        store.add_counter("captures_dropped", 3)
        assert store.counter("captures_dropped") == 5


def test_migrate_twice_is_a_no_op(store_url: str) -> None:
    with open_store(store_url) as store:
        store.insert_calls([make_call()])
    with open_store(store_url) as store:
        assert store.migrate() == LATEST_VERSION
        assert sum(store.count_calls()["support"].values()) == 1


def test_newer_schema_is_refused(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    open_store(url).close()
    with sqlite3.connect(tmp_path / "s.db") as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (999, 'future', 0)")
    with pytest.raises(StoreError, match="newer than this Stillhouse"):
        open_store(url)


def test_unsupported_and_unreachable_urls_are_clear_errors(tmp_path) -> None:
    with pytest.raises(StoreError, match="unsupported store url"):
        open_store("mysql://x")
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL"):
        open_store("postgresql://nobody@127.0.0.1:1/none")


def test_a_transaction_commits_at_its_end_or_not_at_all(store_url: str) -> None:
    lost, kept = make_call(), make_call()
    with open_store(store_url) as store, open_store(store_url) as other:
        with pytest.raises(RuntimeError), store.transaction():
            store.insert_calls([lost])
            store.add_counter("n", 1)
            raise RuntimeError("boom")
        assert store.get_call(lost.id) is None and store.counter("n") == 0
        with store.transaction():
            store.insert_calls([kept])  # a write inside joins the transaction
            store.add_counter("n", 2)
            assert store.get_call(kept.id) == kept  # read inside it
            assert other.get_call(kept.id) is None  # not committed yet
        assert other.get_call(kept.id) == kept and other.counter("n") == 2


def test_one_controller_holds_the_lock(store_url: str) -> None:
    with open_store(store_url) as one, open_store(store_url) as two:
        with one.controller_lock() as held:
            assert held
            with two.controller_lock() as also:
                assert not also
            one.insert_calls([make_call()])  # the lock outlives the store's transactions
            with two.controller_lock() as also:
                assert not also
        with two.controller_lock() as held:
            assert held


def test_teacher_requests_newest_first_within_bounds(store_url: str) -> None:
    call, later = make_call(created_at=100.0), make_call(created_at=102.0)
    student = make_call(role="student", created_at=101.0)
    with open_store(store_url) as store:
        store.insert_calls([call, student, later])
        assert store.teacher_requests("support") == [
            (102.0, later.request, later.metadata),
            (100.0, call.request, call.metadata),
        ]
        assert [r[0] for r in store.teacher_requests("support", since=101.0)] == [102.0]
        assert [r[0] for r in store.teacher_requests("support", before=102.0)] == [100.0]
        assert [r[0] for r in store.teacher_requests("support", limit=1)] == [102.0]
        assert store.task_readiness()["support"]["calls"] == 2


def test_named_questions_answer_with_json_decoded(store_url: str) -> None:
    call = make_call(created_at=100.0)
    student = make_call(role="student", created_at=101.0)
    with open_store(store_url) as store:
        store.insert_calls([call, student])
        assert store.served_requests("support", 0)[0] == (call.request, call.metadata)
        assert store.answered_requests("support") == [call.request, student.request]
        evidence = {r[0]: r for r in store.rollout_evidence("support", 100.5)}
        assert list(evidence) == [student.id] and evidence[student.id][5] == student.metadata
        assert store.call_responses([call.id]) == [(call.id, call.response)]
        assert store.new_teacher_calls("support", 0) == 1
        assert store.intent_traffic("support", 0)[0][2] == call.metadata
        assert [r[0] for r in store.report_rows(0, "support")] == [call.id, student.id]
        event = {
            "id": new_id("evt"),
            "task": "support",
            "created_at": 5.0,
            "kind": "transition",
            "from_state": None,
            "state": "grace",
            "stage": 0,
            "share": 0.0,
            "mode": None,
            "candidate_id": None,
            "reason": "first",
            "detail": {"a": [1, {"b": "é"}]},
        }
        store.append_event(event)
        assert store.events("support") == [event]
        assert store.latest_event("support") == event and store.latest_event("x") is None
        assert store.latest_events() == [event]
        store.add_review_items([("rev_1", student.id, "support", 7.0, "sample")] * 2)
        [item] = store.review_items("support")
        assert (item["id"], item["status"], item["reviewed_at"]) == ("rev_1", "pending", None)
        store.mark_review_item("rev_1", "corrected", "better", "ann", 9.0)
        store.mark_review_item("rev_1", "right", None, "bob", 10.0)  # marked once only
        assert store.review_item("rev_1")["reviewer"] == "ann"  # type: ignore[index]
        assert store.review_corrections("support") == [(student.id, "better")]
