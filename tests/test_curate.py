"""Curation end to end on SQLite and PostgreSQL: filters, PII, JSONL, dedupe, split, snapshots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stillhouse.config import Config, parse_config
from stillhouse.curate import snapshot
from stillhouse.curate.dedupe import dedupe, lsh_params
from stillhouse.curate.intents import assign_intents
from stillhouse.curate.pii import luhn_ok, scrub
from stillhouse.curate.pipeline import curate, curate_calls
from stillhouse.curate.readiness import GraceCounter, grace_readiness
from stillhouse.curate.split import cap_per_intent, stratified_split
from stillhouse.errors import StillhouseError
from stillhouse.store import Call, Score, new_id, open_store

FINE_TUNING_KEYS = {"role", "content", "name", "tool_calls", "tool_call_id", "function_call"}
ROLES = {"system", "user", "assistant", "tool", "function"}


def config(tmp_path: Path, store_url: str, **task: Any) -> Config:
    return parse_config(
        {
            "store": {"url": store_url},
            "models": {"t": {"provider": "openai", "model": "gpt-4.1"}},
            "tasks": {"support": {"teacher": "t", **task}},
        },
        tmp_path,
    )


def call(
    user: str | list[dict[str, Any]],
    answer: str | None = "Sure, I can help with that.",
    *,
    created_at: float = 1000.0,
    intent: str | None = None,
    **kw: Any,
) -> Call:
    messages = [{"role": "user", "content": user}] if isinstance(user, str) else user
    message: dict[str, Any] = {"role": "assistant", "content": answer}
    if "tool_calls" in kw:
        message["tool_calls"] = kw.pop("tool_calls")
    request = {"model": "support", "messages": messages, **kw.pop("request_extra", {})}
    return Call(
        id=kw.pop("id", new_id("call")),
        task="support",
        request=request,
        response={"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]},
        created_at=created_at,
        metadata=kw.pop("metadata", {"intent": intent} if intent else {}),
        **kw,
    )


def check_fine_tuning_line(line: dict[str, Any]) -> None:
    """The checks of OpenAI's chat fine-tuning data validation (format errors it rejects)."""
    assert set(line) <= {"messages", "tools", "parallel_tool_calls"}, line
    messages = line["messages"]
    assert isinstance(messages, list) and messages
    for m in messages:
        assert set(m) <= FINE_TUNING_KEYS and m["role"] in ROLES, m
        assert "content" in m or "tool_calls" in m or "function_call" in m, m
        if isinstance(m.get("content"), str) or m.get("content") is None:
            pass
        else:
            assert isinstance(m["content"], list)
        for tc in m.get("tool_calls", []):
            assert tc["type"] == "function" and isinstance(tc["function"]["arguments"], str)
    assert any(m["role"] == "assistant" for m in messages)
    assert messages[-1]["role"] == "assistant"


# -- filters, each counted ----------------------------------------------------------------
def test_each_filter_removes_and_counts(store_url: str, tmp_path: Path) -> None:
    schema = {"type": "object", "required": ["answer"]}
    cfg = config(tmp_path, store_url, response_schema=schema, curate={"max_tokens": 200})
    good = [call(f"question number {i} about my order", '{"answer": "yes"}') for i in range(3)]
    flagged_by_score = call("was this answer right about refunds", '{"answer": "no"}')
    hallucinated = call("tell me the refund policy for shoes", '{"answer": "maybe"}')
    bad = [
        call("an error", None, status="error", http_status=502, error="upstream down"),
        call("no answer at all", ""),
        call([{"role": "system", "content": "only a system prompt"}], '{"answer": "x"}'),
        call("cut off", '{"answer": "abc', finish_reason="length"),
        flagged_by_score,
        hallucinated,
        call("flagged in metadata", '{"answer": "a"}', metadata={"flagged": True}),
        call("not json for the schema", "plain words"),
        call("json missing the required key", '{"reply": "x"}'),
        call("very long " * 400, '{"answer": "y"}'),
        call("a student answer", '{"answer": "s"}', role="student"),
    ]
    with open_store(store_url) as store:
        store.insert_calls([*good, *bad])
        store.insert_scores(
            [
                Score(id=new_id("score"), call_id=flagged_by_score.id, name="feedback", value=-1),
                Score(id=new_id("score"), call_id=hallucinated.id, name="hallucination", value=1),
                Score(id=new_id("score"), call_id=good[0].id, name="feedback", value=1),
            ]
        )
        report = curate(store, cfg, "support")
    removed = report.dataset.removed
    assert removed == {
        "not_teacher": 1,
        "error": 1,
        "incomplete": 2,
        "truncated": 1,
        "flagged": 3,
        "invalid_schema": 2,
        "too_long": 1,
        "duplicate": 0,
        "near_duplicate": 0,
        "intent_cap": 0,
    }
    assert report.dataset.source_count == len(good) + len(bad)
    assert {e.call_id for e in report.examples} == {c.id for c in good}


# -- PII ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to jane.doe+support@example.co.uk today", "write to [EMAIL] today"),
        ("call +44 20 7946 0958 or (555) 123-4567.", "call [PHONE] or [PHONE]."),
        ("my number is 555-867-5309", "my number is [PHONE]"),
        ("card 4111 1111 1111 1111 exp 12/27", "card [CARD] exp 12/27"),
        ("card 5500-0000-0000-0004 please", "card [CARD] please"),
        ("pay with 4111111111111111 now", "pay with [CARD] now"),
        ("IBAN GB82 WEST 1234 5698 7654 32 thanks", "IBAN [IBAN] thanks"),
        ("iban DE89370400440532013000", "iban [IBAN]"),
        ("ssn 123-45-6789 and NI AB 12 34 56 C", "ssn [NATIONAL_ID] and NI [NATIONAL_ID]"),
        ("from 192.168.1.20 and 2001:db8::1", "from [IP] and [IP]"),
    ],
)
def test_pii_is_replaced_by_typed_placeholders(text: str, expected: str) -> None:
    assert scrub(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 is not valid",  # fails Luhn: not a card, not a phone
        "order 12345678 placed on 2024-01-02 at 12:30:45",
        "version 1.2.3 of the app, 3 items, 42 euros",
        "IBAN GB00 WEST 1234 5698 7654 32 has a bad checksum",
    ],
)
def test_pii_leaves_non_pii_alone(text: str) -> None:
    assert scrub(text) == text


def test_luhn() -> None:
    assert luhn_ok("4111111111111111") and luhn_ok("79927398713")
    assert not luhn_ok("4111111111111112") and not luhn_ok("79927398710")


def test_pii_kinds_are_configurable_per_task(store_url: str, tmp_path: Path) -> None:
    cfg = config(tmp_path, store_url, curate={"pii": ["email"]})
    c = call("mail a@b.com or call 555-867-5309", "noted a@b.com")
    report = curate_calls("support", cfg.tasks["support"], [c])
    line = json.dumps(report.examples[0].example)
    assert "a@b.com" not in line and "[EMAIL]" in line and "555-867-5309" in line


# -- normalisation ----------------------------------------------------------------
def test_multi_turn_and_tool_calls_are_kept(store_url: str, tmp_path: Path) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup_order",
                "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
            },
        }
    ]
    history = [
        {"role": "developer", "content": "You are a support agent."},
        {"role": "user", "content": [{"type": "text", "text": "Where is order 77?"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup_order", "arguments": '{"id": "77"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "shipped"}'},
        {"role": "user", "content": "And my email is bob@example.com"},
    ]
    final = call(history, "It shipped; I noted [your email].", request_extra={"tools": tools})
    tool_turn = call(
        history[:2],
        None,
        tool_calls=history[2]["tool_calls"],
        request_extra={"tools": tools},
    )
    cfg = config(tmp_path, store_url)
    with open_store(store_url) as store:
        store.insert_calls([final, tool_turn])
        report = curate(store, cfg, "support")
        out = tmp_path / "train.jsonl"
        _, n = snapshot.export(store, report.dataset.id, out, "all")
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert n == 2 == len(lines)
    for line in lines:
        check_fine_tuning_line(line)
        assert line["tools"] == tools
    by_len = sorted(lines, key=lambda x: len(x["messages"]))
    assert [m["role"] for m in by_len[1]["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "user",
        "assistant",
    ]
    assert by_len[1]["messages"][1]["content"] == "Where is order 77?"
    assert by_len[1]["messages"][4]["content"] == "And my email is [EMAIL]"
    assert by_len[0]["messages"][-1] == {
        "role": "assistant",
        "tool_calls": history[2]["tool_calls"],
    }


# -- dedupe ----------------------------------------------------------------
LOREM = (
    "my parcel was supposed to arrive on monday but the tracking page still says it is waiting "
    "at the depot and nobody answers the phone line so I would like to know whether I should "
    "cancel the order and buy elsewhere or wait a few more days for the courier"
)


def test_near_duplicates_are_removed_keeping_the_newest(store_url: str, tmp_path: Path) -> None:
    original = call(LOREM, "Please wait two more days.", created_at=100)
    edited = call(LOREM.replace("monday", "tuesday"), "Please wait two more days.", created_at=200)
    exact = call(LOREM.upper(), "Please wait two more days!", created_at=50)
    other = call("how do I change the email address on my account settings page", created_at=10)
    cfg = config(tmp_path, store_url)
    with open_store(store_url) as store:
        store.insert_calls([original, edited, exact, other])
        report = curate(store, cfg, "support")
    assert {e.call_id for e in report.examples} == {edited.id, other.id}
    assert report.dataset.removed["duplicate"] == 1
    assert report.dataset.removed["near_duplicate"] == 1


def test_dedupe_threshold_and_parameters() -> None:
    bands, rows = lsh_params(0.8, 128)
    assert bands * rows <= 128 and 1 - (1 - 0.9**rows) ** bands > 0.99
    texts = [LOREM, LOREM.replace("monday", "tuesday"), " ".join(reversed(LOREM.split()))]
    loose = dedupe(texts, [1, 2, 3], ["a", "b", "c"], threshold=0.8)
    assert loose.kept == (1, 2) and loose.duplicate_of == {0: 1}
    strict = dedupe(texts, [1, 2, 3], ["a", "b", "c"], threshold=0.99)
    assert strict.kept == (0, 1, 2)


# -- intents and split ----------------------------------------------------------------
def test_split_is_seeded_stratified_and_stable() -> None:
    keys = [f"k{i}" for i in range(200)]
    intents = ["a"] * 100 + ["b"] * 60 + ["c"] * 40
    first = stratified_split(keys, intents, holdout=0.15, seed=3)
    assert first == stratified_split(keys, intents, holdout=0.15, seed=3)
    shuffled = list(range(200))[::-1]
    again = stratified_split(
        [keys[i] for i in shuffled], [intents[i] for i in shuffled], holdout=0.15, seed=3
    )
    assert [again[shuffled.index(i)] for i in range(200)] == first  # order does not matter
    for intent, n in (("a", 15), ("b", 9), ("c", 6)):
        assert sum(s == "holdout" for s, t in zip(first, intents, strict=True) if t == intent) == n
    assert first != stratified_split(keys, intents, holdout=0.15, seed=4)


def test_per_intent_cap_keeps_the_newest() -> None:
    kept = cap_per_intent(["a", "a", "a", "b"], [1, 3, 2, 0], ["w", "x", "y", "z"], 2)
    assert kept == [1, 2, 3]


def test_intents_from_metadata_else_clusters() -> None:
    known = ["refund", None, None, None, None, None]
    texts = [
        "refund please",
        "my card was stolen block it",
        "stolen card block it now",
        "block my stolen card",
        "what are your opening hours on sunday",
        "opening hours sunday please",
    ]
    intents, method = assign_intents(known, texts, seed=0)
    assert method == "tfidf" and intents[0] == "refund"
    assert all(i.startswith("cluster:") for i in intents[1:])
    assert assign_intents(known, texts, seed=0) == (intents, method)
    assert assign_intents(["a", "b"], ["x", "y"]) == (["a", "b"], "metadata")


TOPICS = ("refund", "delivery", "password", "invoice", "address", "loan", "pin", "transfer")


def unlabelled(texts: list[str]) -> list[Call]:
    """Teacher calls whose callers send no metadata.intent."""
    return [call(text, created_at=1000.0 + i) for i, text in enumerate(texts)]


def test_grace_counts_clustered_intents_of_callers_without_metadata(
    store_url: str, tmp_path: Path
) -> None:
    """Without metadata.intent grace counted 0 intents until a dataset existed, and the first
    dataset is made only after grace: such a task waited max_days whatever its traffic."""
    grace = {"min_conversations": 80, "min_unique_intents": 6, "max_days": 9999}
    cfg = config(tmp_path, store_url, grace=grace)
    texts = [f"{t} question number {i}: my {t} {t} again" for t in TOPICS for i in range(10)]
    with open_store(store_url) as store:
        store.insert_calls(unlabelled(texts))
        ready = grace_readiness(store, cfg, now=2000.0)["support"]
    # 80 distinct requests: curation's k-means makes round(sqrt(80 / 2)) = 6 clusters of them
    assert ready["intent_method"] == "tfidf" and ready["unique_intents"] == 6
    assert ready["met"]["min_unique_intents"] and ready["ready"]


REVIEW_PARTS = (
    ("blender", "kettle", "backpack", "lamp", "keyboard", "tent"),
    ("broke after a week", "works great", "arrived scratched", "is too loud", "fits well"),
    (
        "shipping was fast",
        "support never replied",
        "the price was fair",
        "I returned it",
        "my kids love it",
        "the box was crushed",
        "setup took minutes",
        "it smells odd",
        "the colour is lovely",
        "it overheats",
    ),
)


def test_grace_ends_for_varied_traffic_without_metadata_under_the_defaults(
    store_url: str, tmp_path: Path
) -> None:
    """The product's defaults (300 conversations, 50 intents) on a task whose callers send no
    metadata.intent: its 300 distinct requests cluster into round(sqrt(300 / 2)) = 12 intents, a
    count that follows from how many distinct requests there were; grace asks no more of it than
    300 distinct requests make, where it used to wait for the ~5,000 that 50 clusters need."""
    cfg = config(tmp_path, store_url)
    assert cfg.tasks["support"].grace.min_unique_intents == 50
    a, b, c = REVIEW_PARTS
    texts = [f"The {x} {y}, and {z}." for x in a for y in b for z in c]
    with open_store(store_url) as store:
        store.insert_calls(unlabelled(texts))
        ready = grace_readiness(store, cfg, now=2000.0)["support"]
        assert ready["conversations"] == 300 and ready["intent_method"] == "tfidf"
        assert ready["intents_needed"] == 12 and ready["unique_intents"] >= 12
        assert ready["met"]["min_unique_intents"] and ready["ready"]
        # the same 300 calls as the callers' intents: the configured 50 still stand
        store.insert_calls(
            [call(t, intent=f"i{k % 8}", created_at=3000.0 + k) for k, t in enumerate(texts)]
        )
    labelled = config(tmp_path, store_url, curate={"intents": "metadata"})
    with open_store(store_url) as store:
        ready = grace_readiness(store, labelled, now=4000.0)["support"]
    assert ready["intent_method"] == "metadata" and ready["intents_needed"] == 50
    assert not ready["met"]["min_unique_intents"]


def test_grace_waits_for_distinct_requests_without_metadata(store_url: str, tmp_path: Path) -> None:
    """300 calls of 8 requests, repeated: 2 clusters, not the 12 that 300 distinct requests
    make, so grace waits (the dataset would hold 8 examples)."""
    cfg = config(tmp_path, store_url)
    texts = [f"my {t} {t} again please" for t in TOPICS] * 38
    with open_store(store_url) as store:
        store.insert_calls(unlabelled(texts[:300]))
        ready = grace_readiness(store, cfg, now=2000.0)["support"]
    assert ready["conversations"] == 300 and ready["met"]["min_conversations"]
    assert ready["unique_intents"] == 2 and not ready["ready"]


def test_grace_counts_repeated_requests_once(store_url: str, tmp_path: Path) -> None:
    grace = {"min_conversations": 80, "min_unique_intents": 6, "max_days": 9999}
    cfg = config(tmp_path, store_url, grace=grace)
    texts = [f"my {t} {t} again please" for t in TOPICS] * 10  # 80 calls, 8 distinct requests
    with open_store(store_url) as store:
        store.insert_calls(unlabelled(texts))
        ready = grace_readiness(store, cfg, now=2000.0)["support"]
    assert ready["conversations"] == 80 and ready["unique_intents"] == 2  # k = sqrt(8 / 2)
    assert not ready["met"]["min_unique_intents"] and not ready["ready"]


def test_grace_counts_again_only_when_new_calls_arrived(store_url: str, tmp_path: Path) -> None:
    cfg = config(tmp_path, store_url, curate={"intents": "metadata"})
    counter = GraceCounter()
    with open_store(store_url) as store:
        store.insert_calls([call(f"{t} please", intent=t) for t in TOPICS[:3]])
        reads = []
        teacher_requests = store.teacher_requests

        def counted(*args: Any, **kw: Any) -> Any:
            reads.append(kw)
            return teacher_requests(*args, **kw)

        store.teacher_requests = counted  # type: ignore[method-assign]
        first = grace_readiness(store, cfg, counter=counter)["support"]
        assert grace_readiness(store, cfg, counter=counter)["support"] == first
        assert first["unique_intents"] == 3 and first["intent_method"] == "metadata"
        assert len(reads) == 1  # the second tick found no new call: nothing read again
        store.insert_calls([call("pin please", intent="pin")])
        assert grace_readiness(store, cfg, counter=counter)["support"]["unique_intents"] == 4
        assert len(reads) == 2


def test_new_distinct_requests_leave_out_repeats(store_url: str, tmp_path: Path) -> None:
    counter = GraceCounter()
    with open_store(store_url) as store:
        store.insert_calls([call(f"my {t} please", created_at=100.0) for t in TOPICS[:4]])
        assert counter.new_distinct(store, "support", 200.0) == 0
        # the same requests again (spacing and case are no difference), one of them twice
        again = ["My refund, please!", "my delivery please", "my delivery   please"]
        store.insert_calls([call(t, created_at=300.0 + i) for i, t in enumerate(again)])
        assert counter.new_distinct(store, "support", 200.0) == 0
        store.insert_calls([call("my loan please", created_at=400.0 + i) for i in range(2)])
        assert counter.new_distinct(store, "support", 200.0) == 1
        assert counter.new_distinct(store, "support", 350.0) == 1  # a new wait, counted anew


# -- snapshots ----------------------------------------------------------------
def test_snapshot_is_content_hashed_stable_and_immutable(store_url: str, tmp_path: Path) -> None:
    cfg = config(tmp_path, store_url)
    topics = ["refund", "lost card", "address change", "password reset"]
    calls = [
        call(
            f"ticket {i}: question about {topics[i % 4]} with details {i * 7919 % 1000} and more",
            f"answer {i}",
            created_at=1000 + i,
            intent=topics[i % 4],
        )
        for i in range(80)
    ]
    with open_store(store_url) as store:
        store.insert_calls(calls)
        first = curate(store, cfg, "support")
        second = curate(store, cfg, "support")
        assert first.created and not second.created
        assert second.dataset == first.dataset  # the stored snapshot, untouched
        assert [d.id for d in store.list_datasets("support")] == [first.dataset.id]
        d = first.dataset
        assert d.id == f"ds_{d.content_hash[:16]}"
        assert (d.train_count, d.holdout_count, d.intents_count) == (68, 12, 4)
        assert d.config["holdout"] == 0.15 and d.config["intent_method"] == "metadata"
        holdout = {e.call_id for e in store.dataset_examples(d.id, "holdout")}
        assert holdout == {e.call_id for e in second.examples if e.split == "holdout"}

        # New traffic makes a new snapshot; the first one stays as it was.
        store.insert_calls([call("a brand new question about refund timing", created_at=5000)])
        third = curate(store, cfg, "support")
        assert third.dataset.id != d.id and third.dataset.train_count == 69
        snapshot.verify(store, store.get_dataset(d.id))  # type: ignore[arg-type]

        # Tampering with stored lines is detected before anything is exported.
        store.conn.execute(
            store._sql("UPDATE dataset_examples SET split = 'train' WHERE dataset_id = ?"),
            (d.id,),
        )
        store.conn.commit()
        with pytest.raises(StillhouseError, match="content hash"):
            snapshot.export(store, d.id, tmp_path / "x.jsonl", "train")


def test_a_different_seed_gives_a_different_split(store_url: str, tmp_path: Path) -> None:
    calls = [
        call(f"question {i} about topic {i % 3} and words", created_at=i, intent=str(i % 3))
        for i in range(60)
    ]
    a = curate_calls("support", config(tmp_path, store_url).tasks["support"], calls)
    b = curate_calls(
        "support", config(tmp_path, store_url, curate={"seed": 9}).tasks["support"], calls
    )
    assert a.dataset.content_hash != b.dataset.content_hash
    assert a.dataset.holdout_count == b.dataset.holdout_count == 9


def test_a_long_shared_system_prompt_does_not_make_duplicates() -> None:
    system = {"role": "system", "content": LOREM * 5}
    calls = [
        call([system, {"role": "user", "content": "how do I reset my password"}], "Use the link."),
        call([system, {"role": "user", "content": "what are the opening hours"}], "Nine to five."),
    ]
    cfg = parse_config(
        {"models": {"t": {"provider": "openai", "model": "x"}}, "tasks": {"s": {"teacher": "t"}}}
    )
    report = curate_calls("s", cfg.tasks["s"], calls)
    assert report.dataset.removed["near_duplicate"] == 0 and len(report.examples) == 2
