"""The leak-free holdout: retold cases and caller groups never straddle the split, the holdout
keeps its share, and `stillhouse curate --json` says how close the holdout comes to training."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from stillhouse.config import TaskConfig, parse_config
from stillhouse.curate.dedupe import jaccard, shingle_hashes, shingle_sets, words
from stillhouse.curate.pipeline import curate_calls, mix_general
from stillhouse.curate.split import group_split, holdout_similarity
from stillhouse.store import Call, open_store

from .test_cli import run
from .test_curate import call
from .test_curate_cli import write_config

VOCAB = [a + b + c for a in "bdfgklmnprst" for b in "aeiou" for c in ("n", "r", "s", "x")]


def task(**curate: object) -> TaskConfig:
    cfg = parse_config(
        {
            "models": {"t": {"provider": "openai", "model": "x"}},
            "tasks": {"s": {"teacher": "t", "curate": curate}},
        }
    )
    return cfg.tasks["s"]


def retold_tickets(n_cases: int, seed: int = 0) -> tuple[list[Call], list[tuple[str, str]]]:
    """Each case told twice: a ticket of 24 words, then the same with two words changed; and a
    paraphrase set of three (the same request with a different greeting and sign-off)."""
    rng = random.Random(seed)
    calls: list[Call] = []
    pairs: list[tuple[str, str]] = []
    for case in range(n_cases):
        ticket = [rng.choice(VOCAB) for _ in range(24)]
        retold = list(ticket)
        for at in rng.sample(range(2, 22), 2):
            retold[at] = rng.choice(VOCAB)
        texts = [" ".join(ticket), " ".join(retold)]
        if case % 5 == 0:
            texts.append(f"hello there, {' '.join(ticket)} thanks a lot")
        ids = [f"call_{case}_{k}" for k in range(len(texts))]
        for k, text in enumerate(texts):
            answer = " ".join(rng.choice(VOCAB) for _ in range(12))
            calls.append(
                call(text, answer, id=ids[k], created_at=case * 10 + k, intent=f"i{case % 4}")
            )
        pairs += [(ids[0], other) for other in ids[1:]]
    return calls, pairs


def test_retold_tickets_never_straddle_the_split() -> None:
    calls, pairs = retold_tickets(120)
    report = curate_calls("s", task(), calls)
    assert report.dataset.removed["near_duplicate"] == 0 and len(report.examples) == len(calls)
    split = {e.call_id: e.split for e in report.examples}
    assert [(a, b) for a, b in pairs if split[a] != split[b]] == []
    held = sum(s == "holdout" for s in split.values())
    assert abs(held / len(split) - 0.15) <= 0.03
    doc = report.to_json()
    assert doc["groups"] == 120 and doc["largest_group"] == 3
    assert 0 <= doc["holdout_max_similarity_to_train"] < 0.5


def test_curation_reports_the_teachers_consistency_over_retellings() -> None:
    """A teacher that answers each retelling of a case anew (here: at random) is inconsistent;
    one that answers the case is consistent: the ceiling a student's agreement runs into."""
    calls, _ = retold_tickets(60)
    noisy = curate_calls("s", task(), calls).to_json()["teacher_consistency"]
    # 48 pairs and 12 triples, every answer different: the majority holds 1 of each group
    assert noisy["examples"] == 132 and noisy["agreement"] == 60 / 132
    steady = [replace(c, response=_answer(c.id.split("_")[1])) for c in calls]
    doc = curate_calls("s", task(), steady).to_json()["teacher_consistency"]
    assert doc["examples"] == 132 and doc["agreement"] == 1.0
    assert doc["agreement_ci"][0] > 0.97 > noisy["agreement_ci"][1]


def _answer(case: str) -> dict[str, object]:
    return {"choices": [{"message": {"role": "assistant", "content": f"case {case}"}}]}


def test_the_old_split_would_straddle_them() -> None:
    """The same data with grouping off (every row its own group): the check above can fail."""
    calls, pairs = retold_tickets(120)
    report = curate_calls("s", task(group_similarity=1.0), calls)
    split = {e.call_id: e.split for e in report.examples}
    assert sum(split[a] != split[b] for a, b in pairs) > 10
    assert report.to_json()["holdout_max_similarity_to_train"] >= 0.5


def test_rows_sharing_metadata_group_stay_together() -> None:
    rng = random.Random(1)
    calls = [
        call(
            " ".join(rng.choice(VOCAB) for _ in range(15)),
            f"answer {i}",
            id=f"call_{i}",
            created_at=i,
            metadata={"intent": "a", "group": f"case-{i // 3}"},
        )
        for i in range(240)
    ]
    report = curate_calls("s", task(), calls)
    by_group: dict[str, set[str]] = {}
    for e in report.examples:
        by_group.setdefault(f"case-{int(e.call_id.split('_')[1]) // 3}", set()).add(e.split)
    assert all(len(s) == 1 for s in by_group.values())
    assert Counter(next(iter(s)) for s in by_group.values())["holdout"] == 12  # 36 of 240 rows
    assert report.to_json()["groups"] == 80


def test_the_holdout_keeps_its_share_with_groups_of_varying_sizes() -> None:
    for seed in range(20):
        rng = random.Random(seed)
        groups: list[int] = []
        intents: list[str] = []
        while len(groups) < 200 + 20 * seed:
            size = rng.choice([1, 1, 1, 2, 2, 3, 4, 6, 8])
            intent = rng.choice(["refund", "card", "address", "login", "rare"][: 2 + seed % 4])
            groups += [len(set(groups))] * size
            intents += [intent if rng.random() < 0.8 else "card"] * size
        keys = [f"k{i}" for i in range(len(groups))]
        for share in (0.15, 0.3):
            out = group_split(keys, intents, groups, holdout=share, seed=seed)
            assert abs(out.count("holdout") / len(out) - share) <= 0.03, (seed, share)
            sides: dict[int, set[str]] = {}
            for g, s in zip(groups, out, strict=True):
                sides.setdefault(g, set()).add(s)
            assert all(len(s) == 1 for s in sides.values())
            back = list(range(len(keys)))[::-1]  # order does not matter
            again = group_split(
                [keys[i] for i in back],
                [intents[i] for i in back],
                [groups[i] + 1000 for i in back],
                holdout=share,
                seed=seed,
            )
            assert again[::-1] == out
        assert out != group_split(keys, intents, groups, holdout=0.3, seed=seed + 100)


def test_holdout_similarity_is_exact_when_small() -> None:
    texts = ["a b c d e f", "a b c d e g", "x y z w", ""]
    leak = holdout_similarity(texts, ["train", "holdout", "train", "holdout"], similarity=0.5)
    docs = [words(t) for t in texts]
    sets = shingle_sets(*shingle_hashes(docs))
    assert leak.exact and leak.max_similarity == round(jaccard(np.array([[0, 1]]), *sets)[0], 4)
    assert holdout_similarity(texts, ["train"] * 4, similarity=0.5).max_similarity == 0.0


def test_general_rows_retelling_a_task_row_are_left_out() -> None:
    calls, _ = retold_tickets(60)
    report = curate_calls("s", task(), calls)
    train = next(e for e in report.examples if e.split == "train")
    held = next(e for e in report.examples if e.split == "holdout")
    general_calls = [
        call(f"general chat number {i} about {' '.join(VOCAB[i : i + 8])}", "ok", id=f"g{i}")
        for i in range(0, 160, 8)
    ]
    for i, source in enumerate((train, held, train, held)):
        user = source.example["messages"][0]["content"]
        general_calls.append(call(user + " please", "ok", id=f"copy{i}", created_at=9999))
    general = curate_calls("general:s", task(holdout=0.5, intents="metadata"), general_calls)
    mixed = mix_general(report, general, 0.2)
    present = {e.call_id: e.split for e in mixed.examples}
    assert "copy1" not in present and "copy3" not in present  # they retell holdout rows
    assert all(present.get(c, "train") == "train" for c in ("copy0", "copy2"))
    assert mixed.dataset.config["general"]["dropped"] >= 2
    assert any(s == "general" for s in present.values())
    assert mixed.to_json()["holdout_max_similarity_to_train"] < 0.5


def test_curate_json_reports_groups_and_the_nearest_holdout_row(
    store_url: str, tmp_path: Path
) -> None:
    write_config(tmp_path, store_url)
    calls, pairs = retold_tickets(70, seed=3)
    with open_store(store_url) as store:
        store.insert_calls(calls)
    doc = json.loads(run("curate", "--task", "support", "--json", cwd=tmp_path).stdout)
    assert doc["train"] + doc["holdout"] == len(calls)
    assert doc["groups"] == 70 and doc["largest_group"] == 3
    assert 0 <= doc["holdout_max_similarity_to_train"] < 0.5
    with open_store(store_url) as store:
        rows = store.dataset_examples(doc["dataset"], None)
    split = {e.call_id: e.split for e in rows}
    assert all(split[a] == split[b] for a, b in pairs)
