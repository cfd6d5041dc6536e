"""Real tiny models and the task they learn, shared by the training and evaluation tests: a
seeded request -> JSON intent task, teacher traces in a store, a tiny Llama base (session-wide)
and a LoRA adapter trained on it for real (session-wide, ~13 s)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from stillhouse.store import Call, new_id, open_store
from stillhouse.train.config import TrainSettings

INTENTS = {
    "card_lost": ["lost my card", "my card is missing", "cannot find my debit card"],
    "refund": ["want my money back", "refund please", "return the payment"],
    "delivery": ["where is my parcel", "my package is late", "delivery did not come"],
    "cancel": ["cancel my plan", "stop my subscription", "end the contract"],
}
GREETINGS = ["hi", "hello", "hey", "good morning", "dear support"]


def answer(intent: str) -> str:
    return json.dumps({"intent": intent})


def chat_examples(n: int, seed: int) -> list[dict[str, Any]]:
    """The teacher's answers to `n` requests: one JSON label per request."""
    rng = random.Random(seed)
    names = list(INTENTS)
    out = []
    for i in range(n):
        intent = names[i % len(names)]
        request = f"{rng.choice(GREETINGS)}, {rng.choice(INTENTS[intent])} {rng.randint(1, 999)}"
        out.append(
            {
                "messages": [
                    {"role": "user", "content": request},
                    {"role": "assistant", "content": answer(intent)},
                ]
            }
        )
    return out


def seed_intent_calls(store_url: str, n: int, seed: int = 7) -> None:
    calls = []
    for i, example in enumerate(chat_examples(n, seed=seed)):
        user, reply = example["messages"]
        calls.append(
            Call(
                id=new_id("call"),
                task="support",
                request={"model": "support", "messages": [user]},
                response={
                    "choices": [
                        {
                            "message": {"role": "assistant", "content": reply["content"]},
                            "finish_reason": "stop",
                        }
                    ]
                },
                created_at=1_700_000_000.0 + i,
                metadata={"intent": json.loads(reply["content"])["intent"]},
            )
        )
    with open_store(store_url) as store:
        store.insert_calls(calls)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from stillhouse.engine.tiny import save_tiny_model

    torch.set_num_threads(1)  # the machine is shared: one thread degrades gracefully
    return save_tiny_model(tmp_path_factory.mktemp("tiny-base") / "model")


def fast_settings(base: Path, **changes: Any) -> TrainSettings:
    # A randomly initialised base learns this closed-label task with LoRA alone (no copying
    # needed) at a LoRA-sized lr of 3e-3; dropout off keeps the small run steady.
    return TrainSettings(
        base_model=str(base), learning_rate=3e-3, epochs=4, dropout=0.0, threads=1
    ).replace(**changes)


HOLDOUT = chat_examples(40, seed=2)


@pytest.fixture(scope="session")
def trained(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from stillhouse.train.lora import train

    out = tmp_path_factory.mktemp("run")
    settings = fast_settings(tiny_base, merge=True)
    return train(settings, chat_examples(160, seed=1), HOLDOUT, out, progress=False)


def register_tiny_candidate(
    store: Any, dataset_id: str, base: Path, name: str, adapter: Path | None, run_dir: Path
) -> str:
    """Register the tiny base model (with `adapter`, or bare) as a local candidate of task
    `support`; its id."""
    from stillhouse.registry import register_candidate

    serving = {"provider": "local", "model": str(base)}
    if adapter is not None:
        serving["adapter"] = str(adapter)
    return register_candidate(
        store,
        task="support",
        dataset_id=dataset_id,
        backend="local",
        base_model=str(base),
        config={"fixture": name},
        artifacts={"run_dir": str(run_dir)},
        serving=serving,
        metrics={},
    ).id
