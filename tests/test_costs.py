"""Prices (catalog, overrides, a GPU hour), the cost captured per call, `report` and `costs`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import openai
import pytest

from stillhouse.config import Price, parse_config
from stillhouse.errors import ConfigError
from stillhouse.pricing import call_cost, price_for, price_source, rates
from stillhouse.pricing_catalog import CATALOG_DATE, catalog_key, catalog_price
from stillhouse.report import report, what_if
from stillhouse.stats import percentile
from stillhouse.store import Call, Score, open_store

from .conftest import Gateway, make_config
from .test_cli import run


def test_catalog_finds_provider_names_with_dates_and_fine_tunes() -> None:
    assert catalog_key("gpt-4.1-2025-04-14") == "gpt-4.1"
    assert catalog_key("GPT-4o-mini") == "gpt-4o-mini"
    assert catalog_key("ft:gpt-4o-mini-2024-07-18:acme::B1x2") == "ft:gpt-4o-mini"
    assert catalog_key("claude-sonnet-4-20250514") == "claude-sonnet-4"
    assert catalog_key("claude-3-5-haiku-latest") == "claude-3-5-haiku"
    assert catalog_key("openai/gpt-4.1") == "gpt-4.1"
    assert catalog_key("meta-llama/Llama-3.1-8B-Instruct") is None
    price = catalog_price("gpt-4.1")
    assert price is not None
    assert (price.input_per_mtok, price.cached_input_per_mtok, price.output_per_mtok) == (
        2.0,
        0.5,
        8.0,
    )


def test_a_configured_price_wins_over_the_catalog(tmp_path: Path) -> None:
    config = parse_config(
        {
            "models": {
                "listed": {"provider": "openai", "model": "gpt-4o"},
                "mine": {"provider": "openai", "model": "gpt-4o", "price": {"input_per_mtok": 1}},
                "local": {"provider": "local", "model": "tiny"},
            }
        },
        tmp_path,
    )
    listed, mine, local = (config.models[m] for m in ("listed", "mine", "local"))
    assert price_for(listed) == catalog_price("gpt-4o") and price_source(listed) == "catalog:gpt-4o"
    assert price_for(mine) == Price(input_per_mtok=1) and price_source(mine) == "config"
    assert price_for(local) is None and price_source(local) == "none"


def test_cached_tokens_are_charged_at_the_cached_rate() -> None:
    price = catalog_price("gpt-4.1")
    # 1000 input of which 400 cached, 100 output: 600*2 + 400*0.5 + 100*8 = 2200 per 1M
    assert call_cost(price, 1000, 100, cached_tokens=400) == pytest.approx(2200 / 1e6)
    assert call_cost(price, None, 100) is None and call_cost(None, 1, 1) is None


def test_a_gpu_hour_is_spread_over_the_measured_throughput(tmp_path: Path) -> None:
    price = Price(gpu_hour=2.5, tokens_per_second=1500)
    per_mtok = 2.5 / 3600 / 1500 * 1e6  # $0.46 per 1M tokens
    assert rates(price).input == pytest.approx(per_mtok) == rates(price).output
    assert call_cost(price, 1000, 500) == pytest.approx(1500 * per_mtok / 1e6)
    base = {"provider": "openai-compatible", "base_url": "http://x/v1", "model": "m"}
    for bad, message in [
        ({"gpu_hour": 2.5}, "go together"),
        ({"gpu_hour": 2.5, "tokens_per_second": 10, "output_per_mtok": 1}, "not both"),
        ({"gpu_hour": 2.5, "tokens_per_second": 0}, "greater than 0"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_config({"models": {"s": {**base, "price": bad}}}, tmp_path)


def test_the_gateway_records_a_catalog_price_when_the_model_has_none(
    tmp_path: Path, upstream, gateway_factory
) -> None:
    base_url, _ = upstream
    teacher = {"provider": "openai-compatible", "base_url": base_url, "model": "gpt-4.1"}
    gw: Gateway = gateway_factory(make_config(tmp_path, base_url, models={"teacher": teacher}))
    client = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
    client.chat.completions.create(
        model="support", messages=[{"role": "user", "content": "where is my parcel"}]
    )
    gw.flush()
    with gw.store() as store:
        (call,) = store.list_calls(task="support")
    assert (call.input_tokens, call.output_tokens) == (4, 5)
    assert call.cost == pytest.approx((4 * 2.0 + 5 * 8.0) / 1e6)  # gpt-4.1 from the catalog


def test_the_worked_example_is_one_command(tmp_path: Path) -> None:
    out = run(
        "costs",
        "--teacher",
        "gpt-4.1",
        "--student",
        "ft:gpt-4o-mini",
        "--share",
        "0.9",
        "--calls-per-day",
        "10000",
        "--input-tokens",
        "1000",
        "--output-tokens",
        "500",
        "--json",
        cwd=tmp_path,
    )
    doc = json.loads(out.stdout)
    # By hand: GPT-4.1 is $2.00 in / $8.00 out per 1M tokens, so 1000*2 + 500*8 = $6000 per
    # 1M calls = $0.006 a call; fine-tuned GPT-4o-mini $0.30 / $1.20: 300 + 600 = $0.0009.
    # Hybrid: 0.9*0.0009 + 0.1*0.006 = $0.00141. A month is 30 days of 10,000 calls = 300,000.
    assert doc["teacher"]["per_call"] == 0.006
    assert doc["teacher"]["monthly"] == 1800.0
    assert doc["student"]["per_call"] == 0.0009
    assert doc["hybrid"]["per_call"] == 0.00141
    assert doc["hybrid"]["monthly"] == 423.0
    assert doc["saving"]["monthly"] == 1377.0
    assert doc["saving"]["fraction"] == 0.765
    assert doc["assumptions"]["catalog_date"] == CATALOG_DATE
    text = run(
        *("costs", "--teacher", "gpt-4.1", "--student", "ft:gpt-4o-mini", "--calls-per-day"),
        *("10000", "--input-tokens", "1000", "--output-tokens", "500"),
        cwd=tmp_path,
    ).stdout
    assert "$1,800.00/month" in text and "$423.00/month" in text and "76.5%" in text
    bad = run(
        *("costs", "--teacher", "gpt-9", "--student", "ft:gpt-4o-mini", "--calls-per-day"),
        *("1", "--input-tokens", "1", "--output-tokens", "1"),
        cwd=tmp_path,
        check=False,
    )
    assert bad.returncode == 1 and "no price for model 'gpt-9'" in bad.stderr


def test_what_if_uses_the_config_price_of_a_named_model(tmp_path: Path) -> None:
    config = parse_config(
        {
            "models": {
                "big": {"provider": "openai", "model": "gpt-4.1"},
                "small": {
                    "provider": "openai-compatible",
                    "base_url": "http://gpu/v1",
                    "model": "llama",
                    "price": {"gpu_hour": 3.6, "tokens_per_second": 1000},  # $1 per 1M tokens
                },
            }
        },
        tmp_path,
    )
    doc = what_if(
        "big",
        "small",
        share=0.5,
        calls_per_day=1000,
        input_tokens=1000,
        output_tokens=0,
        config=config,
    )
    assert doc["student"]["per_call"] == 0.001 and doc["student"]["price_source"] == "config"
    assert doc["hybrid"]["per_call"] == 0.0015 and doc["hybrid"]["monthly"] == 45.0


def _call(n: int, **kw) -> Call:
    fields = {
        "id": f"call_{n:04d}",
        "task": "support",
        "request": {"messages": [{"role": "user", "content": f"q{n}"}]},
        "created_at": 1_000_000.0 + n,
        "input_tokens": 1000,
        "output_tokens": 500,
        "latency_ms": float(n),
    }
    return Call(**{**fields, **kw})


def _config(tmp_path: Path, store_url: str):
    return parse_config(
        {
            "store": {"url": store_url},
            "models": {
                "teacher": {"provider": "openai", "model": "gpt-4.1"},
                "student": {"provider": "openai", "model": "ft:gpt-4o-mini-2024-07-18:acme::x"},
            },
            "tasks": {"support": {"teacher": "teacher", "student": "student"}},
        },
        tmp_path,
    )


def test_report_counts_spend_savings_latency_and_quality(tmp_path: Path, store_url: str) -> None:
    config = _config(tmp_path, store_url)
    teacher, student = 0.006, 0.0009  # per call at 1000 in + 500 out (see the worked example)
    calls = [_call(i, role="teacher", model="teacher", cost=teacher) for i in range(1, 3)]
    calls += [_call(i, role="student", model="student", cost=student) for i in range(3, 10)]
    calls.append(
        _call(10, role="student", model="student", cost=student, route_reason="fallback:replaced")
    )
    calls.append(_call(11, role="teacher", model="teacher", cost=teacher, route_reason="fallback"))
    calls.append(_call(12, role="teacher", model="teacher", cost=teacher, route_reason="shadow"))
    calls.append(_call(13, role="teacher", model="teacher", status="error", cost=None))
    with open_store(store_url) as store:
        store.insert_calls(calls)
        store.insert_scores(
            [
                Score(id="s1", call_id="call_0003", name="shadow_agreement", value=1.0),
                # a score stored before agreement was 0/1 (a difflib ratio): the report reads
                # it as the gates do, agreement only when perfect
                Score(id="s2", call_id="call_0004", name="shadow_agreement", value=0.5),
            ]
        )
        doc = report(store, config, days=1, now=1_000_000.0 + 3600, calls_per_day=1000)
    task = doc["tasks"]["support"]
    costs = task["costs"]
    # 11 user requests (the fallback's and the shadow's teacher calls are extra); spend is every
    # call: 4 teacher-priced calls + 8 student-priced; all-teacher is 10 priced requests
    # (the errored one cost nothing) at the teacher's price.
    assert costs["requests"] == 11
    assert costs["spent"] == pytest.approx(4 * teacher + 8 * student)
    assert costs["teacher_cost_per_call"] == pytest.approx(10 * teacher / 11, abs=1e-8)
    assert costs["cost_per_call"] == pytest.approx((4 * teacher + 8 * student) / 11, abs=1e-8)
    assert costs["monthly"] == pytest.approx(costs["cost_per_call"] * 1000 * 30, abs=0.01)
    assert costs["saving_monthly"] == pytest.approx(
        (10 * teacher - 4 * teacher - 8 * student) / 11 * 30_000, abs=0.01
    )
    assert task["routes"]["student"]["calls"] == 7
    assert task["routes"]["fallback"]["calls"] == 2
    assert task["routes"]["shadow"]["calls"] == 1
    assert task["routes"]["teacher"]["calls"] == 3
    assert task["quality"] == {
        "agreement": 0.5,
        "agreement_samples": 2,
        "fallback_rate": 0.125,  # 1 of 8 student answers was replaced
        "student_answers": 8,
    }
    student_model = task["models"]["student"]
    assert student_model["calls"] == 8
    assert student_model["latency_ms"]["p50"] == pytest.approx(percentile(list(range(3, 11)), 50))
    assert student_model["price_source"] == "catalog:ft:gpt-4o-mini"
    assert task["models"]["teacher"]["errors"] == 1


def test_report_with_no_data_says_null(tmp_path: Path) -> None:
    config = _config(tmp_path, f"sqlite:///{tmp_path / 'empty.db'}")
    with open_store(config.store.url) as store:
        doc = report(store, config)
    task = doc["tasks"]["support"]
    assert task["costs"]["cost_per_call"] is None and task["costs"]["saving_monthly"] is None
    assert task["quality"]["agreement"] is None and task["quality"]["fallback_rate"] is None


def test_report_verb_prints_json_and_text(tmp_path: Path) -> None:
    config_file = tmp_path / "stillhouse.toml"
    config_file.write_text(
        '[models.teacher]\nprovider = "openai"\nmodel = "gpt-4.1"\n'
        '[tasks.support]\nteacher = "teacher"\n'
    )
    with open_store(f"sqlite:///{tmp_path / 'stillhouse.db'}") as store:
        store.insert_calls([_call(1, model="teacher", cost=0.006, created_at=time.time())])
    doc = json.loads(run("report", "--json", "--calls-per-day", "100", cwd=tmp_path).stdout)
    assert doc["tasks"]["support"]["costs"]["monthly"] == 18.0
    text = run("report", "--task", "support", cwd=tmp_path).stdout
    assert "support: 1 requests" in text and "model teacher" in text
    bad = run("report", "--task", "nope", cwd=tmp_path, check=False)
    assert bad.returncode == 1 and "unknown task 'nope'" in bad.stderr
