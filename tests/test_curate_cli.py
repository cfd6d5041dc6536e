"""Curation as a user runs it: captured or imported calls, `stillhouse curate/datasets/export/
import/status` as real subprocesses on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai

from stillhouse.curate.pipeline import curate
from stillhouse.store import Call, new_id, open_store

from .conftest import Gateway
from .test_cli import run
from .test_curate import check_fine_tuning_line


def write_config(tmp_path: Path, store_url: str, extra: str = "") -> None:
    (tmp_path / "stillhouse.toml").write_text(
        f'[store]\nurl = "{store_url}"\n'
        '[models.t]\nprovider = "openai"\nmodel = "gpt-4.1"\n'
        f'[tasks.support]\nteacher = "t"\n{extra}'
    )


def seed_calls(store_url: str, n: int = 40) -> list[Call]:
    calls = [
        Call(
            id=new_id("call"),
            task="support",
            request={
                "model": "support",
                "messages": [
                    {"role": "system", "content": "You are a bank's support agent."},
                    {"role": "user", "content": f"case {i}: my card ending {i:04d} was lost"},
                    {"role": "assistant", "content": "Which card is it?"},
                    {"role": "user", "content": f"the debit one, email me at user{i}@bank.example"},
                ],
            },
            response={
                "choices": [
                    {
                        "message": {"role": "assistant", "content": f"Card {i} blocked."},
                        "finish_reason": "stop",
                    }
                ]
            },
            created_at=1_700_000_000.0 + i,
            metadata={"intent": ["card_lost", "card_stolen"][i % 2]},
        )
        for i in range(n)
    ]
    with open_store(store_url) as store:
        store.insert_calls(calls)
    return calls


def test_curate_datasets_export_end_to_end(store_url: str, tmp_path: Path) -> None:
    write_config(tmp_path, store_url)
    seed_calls(store_url)
    result = run("curate", "--task", "support", "--json", cwd=tmp_path)
    doc = json.loads(result.stdout)  # exactly one JSON document: json.loads rejects any extra
    assert result.stdout.strip().startswith("{") and result.stdout.strip().endswith("}")
    assert doc["dataset"].startswith("ds_")
    assert (doc["train"], doc["holdout"], doc["intents"], doc["groups"]) == (34, 6, 2, 40)
    assert doc["removed"]["error"] == 0 and set(doc["removed"]) >= {"near_duplicate", "flagged"}
    again = json.loads(run("curate", "--task", "support", "--json", cwd=tmp_path).stdout)
    assert again["dataset"] == doc["dataset"] and again["created"] is False

    listed = json.loads(run("datasets", "--json", cwd=tmp_path).stdout)["datasets"]
    assert [d["id"] for d in listed] == [doc["dataset"]]
    assert doc["dataset"] in run("datasets", cwd=tmp_path).stdout

    counts = {}
    for split in ("train", "holdout", "all"):
        out = tmp_path / f"{split}.jsonl"
        run(
            "export", "--dataset", doc["dataset"], "--out", str(out), "--split", split, cwd=tmp_path
        )
        lines = [json.loads(x) for x in out.read_text().splitlines()]
        for line in lines:
            check_fine_tuning_line(line)
            assert len(line["messages"]) == 5
        counts[split] = len(lines)
        assert "@bank.example" not in out.read_text() and "[EMAIL]" in out.read_text()
    assert counts == {"train": 34, "holdout": 6, "all": 40}

    missing = run("export", "--dataset", "ds_nope", "--out", "x.jsonl", cwd=tmp_path, check=False)
    assert missing.returncode == 1 and "no dataset" in missing.stderr
    assert "Traceback" not in missing.stderr
    unknown = run("curate", "--task", "nope", cwd=tmp_path, check=False)
    assert unknown.returncode == 1 and "unknown task" in unknown.stderr


def test_status_reports_grace_readiness(store_url: str, tmp_path: Path) -> None:
    write_config(
        tmp_path,
        store_url,
        "[tasks.support.grace]\nmin_conversations = 30\nmin_unique_intents = 3\nmax_days = 9999\n",
    )
    seed_calls(store_url)
    status = json.loads(run("status", "--json", cwd=tmp_path).stdout)["tasks"]["support"]
    assert status["calls"] == 40
    grace = status["grace"]
    assert grace["conversations"] == 40 and grace["unique_intents"] == 2
    assert grace["days"] > 365
    assert grace["met"] == {
        "min_conversations": True,
        "min_unique_intents": False,
        "max_days": False,
    }
    assert grace["ready"] is False
    assert "grace: 40 conversations, 2 intents" in run("status", cwd=tmp_path).stdout


OPENAI_CHAT = [
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
    "not json at all",
    {"messages": [{"role": "user", "content": "no answer"}]},
    {
        "messages": [
            {"role": "user", "content": "weather in Paris?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {}}}],
    },
]

STORED = [
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4.1",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Yes."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1},
        "metadata": {"intent": "yes_no"},
        "messages": [{"role": "user", "content": "Is it open?"}],
    },
    {"id": "chatcmpl-2", "object": "chat.completion", "choices": []},
]

LANGFUSE = {
    "data": [
        {
            "id": "obs-1",
            "type": "GENERATION",
            "model": "gpt-4.1",
            "startTime": "2025-01-01T10:00:00Z",
            "endTime": "2025-01-01T10:00:02Z",
            "input": [{"role": "user", "content": "Reset my password"}],
            "output": {"role": "assistant", "content": "Done."},
            "usage": {"input": 4, "output": 2},
            "metadata": {"intent": "password"},
        },
        {"id": "span-1", "type": "SPAN", "input": "x", "output": "y"},
        {"id": "obs-2", "type": "GENERATION", "input": [{"content": "no role"}], "output": "x"},
    ]
}


def attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


OTEL = {
    "resourceSpans": [
        {
            "scopeSpans": [
                {
                    "spans": [
                        {
                            "traceId": "t1",
                            "spanId": "s1",
                            "name": "chat gpt-4.1",
                            "startTimeUnixNano": "1700000000000000000",
                            "endTimeUnixNano": "1700000001500000000",
                            "attributes": [
                                attr("gen_ai.request.model", "gpt-4.1"),
                                attr("gen_ai.provider.name", "openai"),
                                attr("gen_ai.usage.input_tokens", 7),
                                attr("gen_ai.usage.output_tokens", 3),
                                attr(
                                    "gen_ai.input.messages",
                                    json.dumps(
                                        [
                                            {
                                                "role": "user",
                                                "parts": [{"type": "text", "content": "Open?"}],
                                            }
                                        ]
                                    ),
                                ),
                                attr(
                                    "gen_ai.output.messages",
                                    json.dumps(
                                        [
                                            {
                                                "role": "assistant",
                                                "parts": [{"type": "text", "content": "9-5."}],
                                                "finish_reason": "stop",
                                            }
                                        ]
                                    ),
                                ),
                            ],
                        },
                        {"spanId": "s2", "name": "db query", "attributes": []},
                        {
                            "spanId": "s3",
                            "attributes": [attr("gen_ai.input.messages", "{broken")],
                        },
                    ]
                }
            ]
        }
    ]
}


def test_importers_with_skip_bad_report_bad_lines_and_land_the_rest(
    store_url: str, tmp_path: Path
) -> None:
    write_config(tmp_path, store_url)
    chat = tmp_path / "chat.jsonl"
    chat.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x) for x in OPENAI_CHAT) + "\n"
    )
    (tmp_path / "stored.jsonl").write_text("\n".join(json.dumps(x) for x in STORED))
    (tmp_path / "langfuse.json").write_text(json.dumps(LANGFUSE))
    (tmp_path / "otel.json").write_text(json.dumps(OTEL))

    def imported(fmt: str, file: str) -> dict[str, Any]:
        args = ("import", fmt, file, "--task", "support", "--skip-bad", "--json")
        return json.loads(run(*args, cwd=tmp_path).stdout)

    doc = imported("openai-chat", "chat.jsonl")
    assert doc["imported"] == 2 and [b["line"] for b in doc["bad"]] == [2, 3]
    assert "assistant" in doc["bad"][1]["error"]
    assert imported("stored-completions", "stored.jsonl")["bad"][0]["line"] == 2
    doc = imported("langfuse", "langfuse.json")
    assert (doc["imported"], doc["skipped"], [b["line"] for b in doc["bad"]]) == (1, 1, [3])
    doc = imported("otel", "otel.json")
    assert (doc["imported"], doc["skipped"], [b["line"] for b in doc["bad"]]) == (1, 1, [3])
    again = imported("openai-chat", "chat.jsonl")  # re-importing never duplicates
    assert again["imported"] == 2

    text = run(
        "import", "openai-chat", "chat.jsonl", "--task", "support", "--skip-bad", cwd=tmp_path
    )
    assert "chat.jsonl:2: invalid JSON" in text.stderr and "imported 2 calls" in text.stdout

    with open_store(store_url) as store:
        calls = store.calls_for_task("support")
        assert len(calls) == 5
        by_source = {c.metadata["source"]: c for c in calls}
        otel = by_source["otel"]
        assert otel.input_tokens == 7 and otel.latency_ms == 1500 and otel.provider == "openai"
        assert by_source["langfuse"].latency_ms == 2000
        assert by_source["stored-completions"].metadata["intent"] == "yes_no"
    doc = json.loads(run("curate", "--task", "support", "--json", cwd=tmp_path).stdout)
    assert doc["train"] + doc["holdout"] == 5
    out = tmp_path / "all.jsonl"
    run("export", "--dataset", doc["dataset"], "--out", str(out), "--split", "all", cwd=tmp_path)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    for line in lines:
        check_fine_tuning_line(line)
    assert any("tools" in line for line in lines)


def test_calls_captured_by_the_gateway_curate(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="x")
    for i in range(6):
        client.chat.completions.create(
            model="support",
            messages=[{"role": "user", "content": f"question {i}: call me on +1 415 555 01{i}9"}],
            metadata={"intent": "callback"},
        )
    gateway.flush()
    with gateway.store() as store:
        report = curate(store, gateway.config, "support")
    assert report.dataset.train_count + report.dataset.holdout_count == 6
    text = json.dumps([e.example for e in report.examples])
    assert "415" not in text and "[PHONE]" in text
    assert report.dataset.intents_count == 1
