"""One LoRA training step, ours against TRL's SFTTrainer, on the same data, model and settings.

Both train the same base (a model directory: `--model`), the same LoRA (r=16, alpha=32,
dropout 0.05, q/k/v/o), the same learning rate, batch size and maximum length, with the loss on
the answer only (ours: the last assistant turn; TRL: the completion of a prompt-completion
dataset) and gradient checkpointing on a GPU (both). Each runs `--steps` steps; the first
`--warmup` are not timed. Reported: steps/s, tokens/s (every token through the model: the
attention mask's sum, padding excluded) and the GPU's peak memory.

The data is JSONL chat examples (a curated dataset's train split: `bench/train_sweep.py export`).
Training speed does not depend on the weights' values, so a randomly initialised model of the
real architecture times the same as the real one (`--random-init` builds it from the folder's
config.json).

    python bench/train_trl.py --model DIR --data triage.train.jsonl [--steps 60] [--json OUT]

Needs the train extra and `trl` (not a dependency of Stillhouse: `pip install trl datasets`).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from stillhouse.train.config import TrainSettings
from stillhouse.train.lora import lora_config
from stillhouse.train.validate import prompt_messages


def load_examples(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Clock:
    """Step timestamps after the warm-up; tokens counted from the batches seen."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.marks: list[float] = []

    def step(self, step: int) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if step >= self.warmup:
            self.marks.append(time.perf_counter())

    def rate(self) -> float:
        if len(self.marks) < 2:
            return 0.0
        return (len(self.marks) - 1) / (self.marks[-1] - self.marks[0])


def peak_gb() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def ours(settings: TrainSettings, examples: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    from stillhouse.train.lora import train

    clock = Clock(warmup)
    reset_peak()
    with tempfile.TemporaryDirectory() as out:
        result = train(
            settings, examples, [], out, progress=False, on_step=lambda s, _l: clock.step(s)
        )
    per_step = result.tokens / max(result.steps, 1)
    return {
        "steps": result.steps,
        "steps_per_s": round(clock.rate(), 3),
        "tokens_per_s": round(clock.rate() * per_step, 1),
        "tokens_per_step": round(per_step, 1),
        "final_loss": round(result.train_loss, 4),
        "peak_gpu_gb": peak_gb(),
        "device": result.device,
    }


def trl(settings: TrainSettings, examples: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    gpu = torch.cuda.is_available()
    assert settings.base_model is not None
    tokenizer = AutoTokenizer.from_pretrained(settings.base_model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    bf16 = gpu and settings.precision != "float32"
    model = AutoModelForCausalLM.from_pretrained(
        settings.base_model, dtype=torch.bfloat16 if bf16 else torch.float32
    )
    rows = [{"prompt": prompt_messages(x), "completion": [x["messages"][-1]]} for x in examples]
    clock = Clock(warmup)
    tokens: list[int] = []

    class Timer(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            clock.step(state.global_step)

    reset_peak()
    with tempfile.TemporaryDirectory() as out:
        config = SFTConfig(
            output_dir=out,
            per_device_train_batch_size=settings.batch_size,
            max_steps=settings.max_steps or 0,
            learning_rate=settings.learning_rate,
            lr_scheduler_type="linear",
            warmup_steps=settings.warmup,  # a float below 1: a share of the steps
            max_length=settings.max_length,
            bf16=bf16,
            gradient_checkpointing=gpu,
            completion_only_loss=True,
            packing=False,
            logging_steps=10_000,
            save_strategy="no",
            report_to=[],
            seed=settings.seed,
            dataloader_num_workers=0,
            use_cpu=not gpu,
        )
        trainer = SFTTrainer(
            model=model,
            args=config,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=lora_config(settings),  # the very LoRA our loop trains
            callbacks=[Timer()],
        )
        collate = trainer.data_collator

        def counting(features: list[dict[str, Any]]) -> dict[str, Any]:
            batch = collate(features)
            tokens.append(int(batch["attention_mask"].sum()))
            return batch

        trainer.data_collator = counting
        output = trainer.train()
    per_step = sum(tokens) / max(len(tokens), 1)
    return {
        "steps": int(output.global_step),
        "steps_per_s": round(clock.rate(), 3),
        "tokens_per_s": round(clock.rate() * per_step, 1),
        "tokens_per_step": round(per_step, 1),
        "final_loss": round(float(output.training_loss), 4),
        "peak_gpu_gb": peak_gb(),
        "device": "cuda" if gpu else "cpu",
    }


def random_init(folder: Path, into: Path) -> Path:
    """A copy of `folder`'s tokenizer and config with freshly initialised weights."""
    import shutil

    from transformers import AutoConfig, AutoModelForCausalLM

    into.mkdir(parents=True, exist_ok=True)
    for f in folder.iterdir():
        if f.is_file() and not f.name.endswith(".safetensors"):
            shutil.copy(f, into / f.name)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))
    model.save_pretrained(into)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a model directory (config.json...)")
    parser.add_argument("--random-init", action="store_true", help="weights from the config")
    parser.add_argument("--data", required=True, type=Path, help="JSONL chat examples")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5, help="steps not timed")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    model = Path(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        if args.random_init:
            model = random_init(model, Path(tmp) / "model")
        settings = TrainSettings(
            base_model=str(model),
            max_steps=args.steps,
            batch_size=args.batch,
            precision=args.precision,
        )
        examples = load_examples(args.data)
        results = {
            "ours": ours(settings, examples, args.warmup),
            "trl": trl(settings, examples, args.warmup),
        }
    import torch
    import transformers
    import trl as trl_package

    doc = {
        "bench": "train_trl",
        "model": args.model,
        "random_init": args.random_init,
        "examples": len(examples),
        "settings": settings.run_json(),
        "warmup_steps": args.warmup,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl_package.__version__,
        "machine": platform.node(),
        "results": results,
        "ours_over_trl": round(
            results["ours"]["tokens_per_s"] / max(results["trl"]["tokens_per_s"], 1e-9), 2
        ),
    }
    text = json.dumps(doc, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
