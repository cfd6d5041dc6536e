"""The registry on SQLite and PostgreSQL: immutable candidates, eval runs and releases, and the
lineage from a release back to the dataset it came from."""

from __future__ import annotations

import pytest

from stillhouse.curate import snapshot
from stillhouse.errors import StillhouseError
from stillhouse.registry import (
    descendants,
    lineage,
    record_eval_run,
    record_release,
    register_candidate,
)
from stillhouse.store import open_store
from stillhouse.store.records import DatasetExample
from stillhouse.store.schema import MIGRATIONS


def make_dataset(store, task: str = "support"):
    rows = [
        DatasetExample(0, "train", "call_1", "x", {"messages": [{"role": "user", "content": "a"}]})
    ]
    ds = snapshot.build(task, rows, source_count=1, removed={}, config={"holdout": 0.15})
    snapshot.save(store, ds, rows)
    return ds


def candidate(store, dataset_id: str, **extra):
    return register_candidate(
        store,
        task="support",
        dataset_id=dataset_id,
        backend="local",
        base_model="tiny",
        config={"r": 16},
        artifacts={"adapter_dir": "/x"},
        serving={"provider": "local", "model": "tiny", "adapter": "/x"},
        metrics={"train_loss": 0.5},
        **extra,
    )


def test_registry_tables_are_migration_3() -> None:
    assert [m.version for m in MIGRATIONS][:3] == [1, 2, 3]
    assert "CREATE TABLE candidates" in MIGRATIONS[2].statements[0]


def test_the_chain_from_release_to_dataset(store_url: str) -> None:
    with open_store(store_url) as store:
        ds = make_dataset(store)
        first = candidate(store, ds.id)
        second = candidate(store, ds.id, parent_id=first.id)
        assert store.get_candidate(second.id) == second
        assert [c.id for c in store.list_candidates("support")] == [second.id, first.id]
        run = record_eval_run(
            store,
            second.id,
            dataset_id=ds.id,
            config={"metric": "exact"},
            metrics={"agreement": 0.95},
            passed=True,
        )
        assert store.get_eval_run(run.id) == run
        release = record_release(store, second.id, eval_run_id=run.id, config={"stage": 10})
        assert store.get_release(release.id) == release
        chain = lineage(store, release.id)
        assert [link.kind for link in chain] == [
            "dataset",
            "candidate",
            "dataset",
            "candidate",
            "eval_run",
            "release",
        ]
        assert [link.id for link in chain][-3:] == [second.id, run.id, release.id]
        assert all(len(link.config_hash) == 64 for link in chain)
        assert {link.id for link in descendants(store, second.id)} == {run.id, release.id}
        assert [link.id for link in descendants(store, first.id)] == [second.id]


def test_rows_are_written_once(store_url: str) -> None:
    with open_store(store_url) as store:
        ds = make_dataset(store)
        cand = candidate(store, ds.id)
        changed = type(cand)(**{**cand.to_dict(), "metrics": {"train_loss": 99.0}})
        assert store.insert_candidate(changed) is False
        assert store.get_candidate(cand.id) == cand


def test_parents_must_exist(store_url: str) -> None:
    with open_store(store_url) as store:
        with pytest.raises(StillhouseError, match="no dataset"):
            candidate(store, "ds_missing")
        ds = make_dataset(store)
        with pytest.raises(StillhouseError, match="no candidate"):
            candidate(store, ds.id, parent_id="cand_missing")
        with pytest.raises(StillhouseError, match="no eval run"):
            record_release(store, candidate(store, ds.id).id, eval_run_id="eval_x", config={})
        with pytest.raises(StillhouseError, match="not a registry id"):
            lineage(store, "call_1")
