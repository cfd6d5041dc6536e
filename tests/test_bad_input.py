"""Bad input never gets a 5xx: property-based tests of the request parser (hypothesis) and
generated requests against the gateway's own OpenAPI description (schemathesis).

Example counts keep these tests to well under a minute; STILLHOUSE_FUZZ_EXAMPLES raises them for
a long run (bench/fuzz.py runs thousands and records the result in docs/reliability.md).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import openai
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stillhouse.errors import BadRequest
from stillhouse.gateway.openapi import openapi_spec
from stillhouse.gateway.protocol import upstream_body
from stillhouse.openai.protocol import MAX_DEPTH, ChatCompletionRequest, parse_request

from .conftest import Gateway, make_config

EXAMPLES = int(os.environ.get("STILLHOUSE_FUZZ_EXAMPLES", "100"))
FAST = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
json_safe = st.recursive(  # what any JSON encoder writes: 64-bit integers, finite numbers
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
ROLES = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function"])
messages = st.lists(
    st.fixed_dictionaries({"role": ROLES, "content": st.text() | st.none()}),
    min_size=1,
    max_size=4,
)
# Fields the gateway does not know go upstream as sent.
KNOWN_FIELDS = set(ChatCompletionRequest.model_fields)
extra_fields = st.dictionaries(
    st.text(min_size=1).filter(lambda k: k not in KNOWN_FIELDS), json_safe, max_size=3
)


def assert_bad_request(err: BadRequest) -> None:
    body = err.to_body()
    assert err.status == 400
    assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["message"]


@FAST
@given(st.binary(max_size=300))
def test_any_bytes_parse_or_are_a_400(raw: bytes) -> None:
    try:
        parse_request(raw)
    except BadRequest as err:
        assert_bad_request(err)


@FAST
@given(json_values)
def test_any_json_parses_or_is_a_400_naming_the_field(value: Any) -> None:
    try:
        body, _ = parse_request(json.dumps(value).encode())  # stdlib: big ints, Infinity too
    except BadRequest as err:
        assert_bad_request(err)
    else:
        assert body == value  # what was accepted is forwarded as sent


@FAST
@given(messages, st.text(min_size=1), extra_fields, json_safe)
def test_well_formed_requests_are_accepted_and_forwarded_whole(
    msgs: list[dict[str, Any]], model: str, extra: dict[str, Any], meta_value: Any
) -> None:
    sent = {"model": model, "messages": msgs, "metadata": {"task": "t", "other": meta_value}}
    sent |= extra
    body, checked = parse_request(orjson.dumps(sent))
    assert checked.model == model and len(checked.messages) == len(msgs)
    forwarded = upstream_body(body, "up")
    assert forwarded["model"] == "up"
    assert forwarded["metadata"] == {"other": meta_value}  # ours (task) is not forwarded
    for key, value in extra.items():
        assert forwarded[key] == value


@FAST
@given(
    st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.builds(
            lambda m, extra: orjson.dumps({"model": "support", "messages": m} | extra),
            messages,
            extra_fields,
        ),
    ),
)
def test_the_gateway_never_answers_bad_bytes_with_a_5xx(gateway: Gateway, raw: bytes) -> None:
    headers = {"content-type": "application/json"}
    r = httpx.post(gateway.base_url + "/chat/completions", content=raw, headers=headers, timeout=10)
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]


# -- valid JSON the gateway reads: metadata it acts on, bodies nested deep -----------------------
def _stored_as(gateway: Gateway, call_id: str | None) -> int | None:
    """The http_status stored for the call the client was told about (None: not captured)."""
    if call_id is None:
        return None
    gateway.flush()
    with gateway.store() as store:
        call = store.get_call(call_id)
    assert call is not None, f"the client was told of {call_id}, the store never had it"
    return call.http_status


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_the_probes_metadata_gets_an_answer_the_store_agrees_with(gateway: Gateway) -> None:
    """The probe's requests, through the official SDK: each used to be a 500 or a dropped
    connection *after* the upstream had answered, stored as a 200."""
    c = openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0)
    cases = [
        {"intent": "réservation ☕ 予約"},  # not latin-1: the header could not be encoded
        {"intent": "refund\r\nX-Injected: 1"},  # CR/LF: the server dropped the connection
        {"candidate": 7},  # not a string: the header could not be built
    ]
    for metadata in cases:
        raw = c.chat.completions.with_raw_response.create(
            model="support",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"metadata": metadata},
        )
        assert raw.http_response.status_code == 200, metadata
        assert "x-injected" not in raw.headers
        assert _stored_as(gateway, raw.headers["x-stillhouse-call-id"]) == 200
    assert raw.headers.get("x-stillhouse-candidate") is None  # 7 was the caller's, not ours
    first = c.chat.completions.with_raw_response.create(
        model="support", messages=[{"role": "user", "content": "hi"}], metadata=cases[0]
    )
    assert unquote(first.headers["x-stillhouse-intent"]) == cases[0]["intent"]


def test_a_body_nested_past_the_limit_is_a_400_before_the_upstream(gateway: Gateway) -> None:
    """orjson reads 1,024 levels but writes 254: a body nested 253-1,024 deep used to reach the
    upstream and then fail to be answered (500, reset) or captured."""
    for depth in (MAX_DEPTH - 2, 253, 300, 1024, 1100):
        body = b'{"model": "support", "messages": [{"role": "user", "content": "hi"}], "x": '
        r = httpx.post(
            gateway.base_url + "/chat/completions",
            content=body + _nested(depth) + b"}",
            headers={"content-type": "application/json"},
            timeout=10,
        )
        if depth + 1 <= MAX_DEPTH:
            assert r.status_code == 200, (depth, r.text)
            assert _stored_as(gateway, r.headers["x-stillhouse-call-id"]) == 200
        else:
            assert r.status_code == 400, (depth, r.text)
            assert r.json()["error"]["code"] == "invalid_json"
            assert "x-stillhouse-call-id" not in r.headers  # never sent upstream


def test_reserved_metadata_from_a_caller_is_kept_under_client(gateway: Gateway) -> None:
    """`candidate` selects a stage's rollout evidence: a caller who could set it could pass or
    fail a candidate's gate with teacher answers. The caller's values are kept, under client."""
    c = openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0)
    sent = {
        "candidate": "cand_poison",
        "fallback_of": "call_x",
        "shadow_of": "call_y",
        "usage_estimated": True,
        "client": "mine",
        "team": "a",
    }
    raw = c.chat.completions.with_raw_response.create(
        model="support", messages=[{"role": "user", "content": "hi"}], extra_body={"metadata": sent}
    )
    gateway.flush()
    with gateway.store() as store:
        call = store.get_call(raw.headers["x-stillhouse-call-id"])
    assert call is not None
    reserved = {k: v for k, v in sent.items() if k != "team"}
    assert call.metadata == {"team": "a", "client": reserved}


reserved_metadata = st.fixed_dictionaries(
    {},
    optional={
        "intent": st.text(),
        "task": st.just("support") | st.text(),
        "session_id": json_safe,
        "candidate": json_safe,
        "fallback_of": json_safe,
        "shadow_of": json_safe,
        "usage_estimated": json_safe,
        "routed_intent": json_safe,
        "client": json_safe,
    },
)


@FAST
@given(reserved_metadata, st.integers(min_value=0, max_value=1100), st.booleans())
def test_metadata_and_nesting_get_a_2xx_or_4xx_the_store_agrees_with(
    gateway: Gateway, metadata: dict[str, Any], depth: int, stream: bool
) -> None:
    body = orjson.dumps(
        {
            "model": "support",
            "stream": stream,
            "messages": [{"role": "user", "content": "hi"}],
            "metadata": metadata,
        }
    )
    raw = body[:-1] + b', "deep": ' + _nested(depth) + b"}"
    r = httpx.post(
        gateway.base_url + "/chat/completions",
        content=raw,
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert r.status_code < 500, r.text
    stored = _stored_as(gateway, r.headers.get("x-stillhouse-call-id"))
    if r.status_code == 200:
        assert stored == 200 and (not stream or r.text.endswith("data: [DONE]\n\n"))
    else:
        assert stored is None and set(r.json()["error"]) == {"message", "type", "param", "code"}


# -- schemathesis against the published OpenAPI description --------------------------------------
def _described() -> dict[str, Any]:
    """The gateway's description, with `model` pinned to the test's task so generated requests
    reach the upstream (otherwise nearly all are 404s for unknown tasks)."""
    spec = copy.deepcopy(openapi_spec(make_config(Path("."), "http://unused/v1")))
    for request in ("ChatCompletionRequest", "ResponsesRequest"):
        spec["components"]["schemas"][request]["properties"]["model"] = {
            "type": "string",
            "enum": ["support"],
        }
    return spec


schema = schemathesis.openapi.from_dict(_described())


def test_the_published_description_is_the_one_tested(gateway: Gateway) -> None:
    published = httpx.get(gateway.url + "/openapi.json").json()
    assert published["paths"].keys() == _described()["paths"].keys()
    assert published["components"]["schemas"]["Error"]["required"] == ["error"]


@schema.parametrize()
@FAST
def test_generated_requests_against_the_openapi_description(case: Any, gateway: Gateway) -> None:
    # Every check but "a schema-valid request is accepted": the gateway checks the fields it
    # reads and passes the rest through, so the upstream may rightly refuse a request the
    # description allows (`"tools": [{}]`); its 400 still has to be OpenAI-shaped, checked here.
    case.call_and_validate(
        base_url=gateway.url, excluded_checks=[schemathesis.checks.positive_data_acceptance]
    )


# -- importers fed truncated, non-UTF-8 and hostile files ---------------------------------------
def _chat_line(i: int, answer: str = "fine") -> bytes:
    messages = [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": answer}]
    return orjson.dumps({"messages": messages}) + b"\n"


def _import(tmp_path: Path, store_url: str, fmt: str, data: bytes, *flags: str):
    from .test_cli import run
    from .test_curate_cli import write_config

    write_config(tmp_path, store_url)
    (tmp_path / "in.data").write_bytes(data)
    return run("import", fmt, "in.data", "--task", "support", *flags, cwd=tmp_path, check=False)


def _stored(store_url: str) -> list[Any]:
    from stillhouse.store import open_store

    with open_store(store_url) as store:
        return store.calls_for_task("support")


def test_a_truncated_jsonl_file_imports_nothing_and_names_the_line(
    tmp_path: Path, store_url: str
) -> None:
    whole = b"".join(_chat_line(i) for i in range(100))
    result = _import(tmp_path, store_url, "openai-chat", whole[:-25])
    assert result.returncode == 1
    assert "in.data:100: invalid JSON" in result.stderr
    assert "nothing imported: 1 bad records" in result.stderr
    assert _stored(store_url) == []
    kept = _import(tmp_path, store_url, "openai-chat", whole[:-25], "--skip-bad")
    assert kept.returncode == 0 and len(_stored(store_url)) == 99


def test_a_truncated_json_array_names_the_line_where_it_breaks(
    tmp_path: Path, store_url: str
) -> None:
    rows = [
        {"type": "GENERATION", "id": f"g{i}", "input": f"q{i}", "output": "a", "model": "m"}
        for i in range(20)
    ]
    text = orjson.dumps(rows, option=orjson.OPT_INDENT_2)
    cut = text[: len(text) // 2]
    result = _import(tmp_path, store_url, "langfuse", cut)
    assert result.returncode == 1
    line = cut.count(b"\n") + 1
    assert f"in.data:{line}: the JSON document is broken" in result.stderr
    assert _stored(store_url) == []


def test_a_non_utf8_file_is_refused_with_its_line(tmp_path: Path, store_url: str) -> None:
    data = _chat_line(1) + _chat_line(2) + b'{"messages": "caf\xe9"}\n' + _chat_line(4)
    result = _import(tmp_path, store_url, "openai-chat", data)
    assert result.returncode == 1
    assert "in.data:3: not UTF-8 (byte 0xe9); nothing imported" in result.stderr
    assert "Traceback" not in result.stderr
    assert _stored(store_url) == []


HOSTILE_ANSWERS = [
    "'); DROP TABLE calls; --",
    "nul \x00 inside",
    "\u202etxt.exe",
    "x" * 2_000_000,
    "<script>alert(1)</script>",
    "\\u0000 spelled out",
]


def test_hostile_but_valid_records_land_verbatim_and_harm_nothing(
    tmp_path: Path, store_url: str
) -> None:
    data = b"".join(_chat_line(i, answer) for i, answer in enumerate(HOSTILE_ANSWERS))
    result = _import(tmp_path, store_url, "openai-chat", data)
    assert result.returncode == 0, result.stderr
    answers = {c.response["choices"][0]["message"]["content"] for c in _stored(store_url)}
    # NUL cannot be stored in PostgreSQL text: it is the one character replaced (by U+FFFD).
    expected = {
        a.replace("\x00", "\ufffd") if "postgres" in store_url else a for a in HOSTILE_ANSWERS
    }
    assert answers == expected


def test_hostile_structure_is_a_bad_record_not_a_crash(tmp_path: Path, store_url: str) -> None:
    deep = b"[" * 5000 + b"]" * 5000
    data = _chat_line(1) + deep + b"\n" + b'{"messages": [{"role": 7}]}\n' + b"\x00\x01\n"
    result = _import(tmp_path, store_url, "openai-chat", data)
    assert result.returncode == 1
    for line in (2, 3, 4):
        assert f"in.data:{line}:" in result.stderr
    assert "Traceback" not in result.stderr
    assert _stored(store_url) == []


@pytest.mark.postgres
def test_a_request_with_nul_characters_is_captured_on_postgres(
    tmp_path: Path, upstream, gateway_factory, pg_url: str
) -> None:
    """PostgreSQL refuses NUL in text and JSONB; one such request must not fail its batch (and
    with it every call written alongside) for ever."""
    import openai

    gw = gateway_factory(make_config(tmp_path, upstream[0], store_url=pg_url))
    c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
    c.chat.completions.create(model="support", messages=[{"role": "user", "content": "before"}])
    c.chat.completions.create(
        model="support", user="u\x00ser", messages=[{"role": "user", "content": "a\x00b"}]
    )
    gw.flush()
    with gw.store() as store:
        calls = store.list_calls()
    assert len(calls) == 2
    nul = next(call for call in calls if call.session_key is not None)
    assert nul.session_key == "u\ufffdser"
    assert nul.request["messages"][0]["content"] == "a\ufffdb"
