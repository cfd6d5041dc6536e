"""Local LoRA training: a base causal LM, an adapter on its attention projections, a plain torch
loop over a dataset's chat examples (CPU, or a GPU in bf16 with gradient checkpointing).

It reads top to bottom: encode -> batches -> steps -> validation (loss, agreement) -> checkpoint
-> adapter. The loss never sees anything but the assistant's tokens, and the base weights are
never changed (a merged copy is written beside the adapter, never over the base).
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import TrainSettings
from .data import Encoded, TrainingError, batches, collate, encode_all, epoch_order
from .loss import IGNORE, batch_loss

log = logging.getLogger("stillhouse.train")


@dataclass(frozen=True, slots=True)
class TrainResult:
    adapter_dir: Path
    merged_dir: Path | None
    base_dir: str  # the directory (or hub id) the adapter was trained on
    train_loss: float  # mean loss over the last epoch's steps
    validation_loss: float | None  # the kept adapter's (the best one's)
    initial_validation_loss: float | None
    validation_agreement: float | None  # the kept adapter's, when agreement was scored
    steps: int
    tokens: int  # tokens through the model (prompt and answer), resumed steps included
    seconds: float  # this process's training time
    tokens_per_second: float
    stopped_early: bool
    resumed_at: int  # the step a checkpoint resumed from (0: a fresh run)
    device: str
    history: tuple[dict[str, float], ...] = field(default=())  # one entry per evaluation
    train_examples: int = 0  # examples trained on
    validation_examples: int = 0  # examples judged on

    def metrics(self) -> dict[str, Any]:
        return {
            "train_loss": self.train_loss,
            "validation_loss": self.validation_loss,
            "initial_validation_loss": self.initial_validation_loss,
            "validation_agreement": self.validation_agreement,
            "steps": self.steps,
            "tokens": self.tokens,
            "seconds": round(self.seconds, 3),
            "tokens_per_second": round(self.tokens_per_second, 1),
            "stopped_early": self.stopped_early,
            "resumed_at": self.resumed_at,
            "device": self.device,
            "history": list(self.history),
            "train_examples": self.train_examples,
            "validation_examples": self.validation_examples,
        }


# -- model -----------------------------------------------------------------------------------
def pick_device(wanted: str) -> str:
    import torch

    if wanted == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device is 'cuda' but no GPU is available")
    if wanted == "cpu":
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_base(spec: str, device: str, precision: str = "auto") -> tuple[Any, Any, str]:
    """(model, tokenizer, base directory): bf16 weights on a GPU (unless precision is float32),
    fp32 on the CPU (where precision bfloat16 is an autocast, see `batch_loss`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..engine.sources import local_directory, resolve

    directory = local_directory(resolve(spec))
    tokenizer = AutoTokenizer.from_pretrained(directory)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    bf16 = device == "cuda" and precision != "float32"
    dtype = torch.bfloat16 if bf16 else torch.float32
    model: Any = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype)
    model = model.to(device)
    return model, tokenizer, str(directory)


def lora_config(settings: TrainSettings) -> Any:
    """The peft LoraConfig of `settings` (r, alpha, dropout, target modules)."""
    from peft import LoraConfig

    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        task_type="CAUSAL_LM",
    )


def add_adapter(model: Any, settings: TrainSettings, device: str) -> Any:
    import torch
    from peft import get_peft_model

    torch.manual_seed(settings.seed)  # LoRA's A matrices start random: seed them
    peft_model = get_peft_model(model, lora_config(settings))
    if device == "cuda":
        # Activations dominate a GPU's memory at long contexts; on a CPU recomputing them costs
        # ~15% and saves nothing that matters (MODELS.md).
        peft_model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
        peft_model.config.use_cache = False
    return peft_model


def validation_loss(
    model: Any, items: Sequence[Encoded], batch_size: int, pad_id: int, **options: Any
) -> float:
    """Mean loss per assistant token over the validation split (dropout off); `options` as for
    `batch_loss`."""
    import torch

    device = next(model.parameters()).device
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for chunk in batches(items, batch_size):
            batch = collate(chunk, pad_id, device)
            n = int((batch["labels"][:, 1:] != IGNORE).sum())  # the model shifts labels by one
            total += float(batch_loss(model, batch, **options)) * n
            count += n
    model.train()
    return total / max(count, 1)


def _lr_factor(step: int, total: int, warmup: float) -> float:
    """Linear warm-up over `warmup` of the steps, then linear decay to zero."""
    warm = max(1, math.ceil(warmup * total)) if warmup > 0 else 0
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (total - step) / max(1, total - warm))


# -- checkpoints -------------------------------------------------------------------------------
def _save_checkpoint(directory: Path, state: dict[str, Any]) -> None:
    import torch

    tmp = directory.with_name(directory.name + ".tmp")
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(state, tmp / "state.pt")
    # Killed at any point, a whole checkpoint is left: `directory`, else `.old` (two renames)
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.replace(old)
    tmp.replace(directory)
    shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(directory: Path) -> dict[str, Any] | None:
    """The newest whole checkpoint, or None (a run killed mid-save falls back to `.old`)."""
    import torch

    for candidate in (directory, directory.with_name(directory.name + ".old")):
        path = candidate / "state.pt"
        if not path.is_file():
            continue
        try:
            state: dict[str, Any] = torch.load(path, weights_only=False)
        except Exception as err:  # torch raises RuntimeError, EOFError, pickle errors...
            log.warning("ignoring unreadable checkpoint %s: %s", path, err)
            continue
        return state
    return None


# -- the loop ----------------------------------------------------------------------------------
def _log_step(out: Path, step: int, total: int, loss: float, spent: float, resumed: int) -> None:
    """Where a run without a progress bar (the controller's, in `stillhouse serve`) stands."""
    each = spent / max(step - resumed, 1)
    log.info(
        "training %s: step %d/%d, loss %.4f, %.1f s a step, ~%.0f min left",
        out.name,
        step,
        total,
        loss,
        each,
        each * (total - step) / 60,
    )


def train(
    settings: TrainSettings,
    train_examples: Sequence[dict[str, Any]],
    validation_examples: Sequence[dict[str, Any]],
    out_dir: str | Path,
    *,
    progress: bool = True,
    resume: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    validate: Callable[[Any, Any], float] | None = None,
) -> TrainResult:
    """Train a LoRA adapter on `settings.base_model`; write it (and a merged model when
    `settings.merge`) under `out_dir`. Resumes from `out_dir/checkpoint` when one is there.
    `on_step(step, loss)` is called after each step (and after its checkpoint is written).

    `validation_examples` (a share of the train split, never the gate's holdout): at each
    evaluation their loss is measured and, with `validate(model, tokenizer)` (a score, higher
    is better: train/validate.Scorer's agreement), scored; the adapter kept, and the patience
    counted, follow the score (its ties broken by the loss), else the loss alone. Training
    stops as soon as the score reaches `settings.target_agreement`."""
    import torch
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from tqdm import tqdm

    from .export import merge_adapter, save_adapter

    if not settings.base_model:
        raise TrainingError("no base model: set tasks.<task>.train.base_model or a local student")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(settings.device)
    model, tokenizer, base_dir = load_base(settings.base_model, device, settings.precision)
    pad_id = int(tokenizer.pad_token_id)
    train_items = encode_all(tokenizer, train_examples, settings.max_length, settings.turns)
    validation_items = encode_all(
        tokenizer, validation_examples, settings.max_length, settings.turns
    )
    if not train_items:
        raise TrainingError("no training example has an assistant answer to learn")
    model = add_adapter(model, settings, device)
    model.train()
    options = {
        "share_prefix": device != "cuda",  # gradient checkpointing (GPU) returns no cache
        "cpu_bf16": device == "cpu" and settings.precision == "bfloat16",
    }

    per_epoch = math.ceil(len(train_items) / settings.batch_size)
    total = settings.max_steps or per_epoch * settings.epochs
    eval_every = settings.eval_every or per_epoch
    checkpoint_every = settings.checkpoint_every or eval_every
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(s, total, settings.warmup)
    )

    step, tokens, losses = 0, 0, []
    best_key: tuple[float, float] | None = None  # (score, -loss) of the adapter kept
    best_state: dict[str, Any] | None = None
    bad_evals = 0
    history: list[dict[str, float]] = []
    initial: float | None = None
    checkpoint = out / "checkpoint"
    saved = _load_checkpoint(checkpoint) if resume else None
    if saved is not None:
        set_peft_model_state_dict(model, saved["adapter"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"])
        step, tokens, losses = saved["step"], saved["tokens"], saved["losses"]
        best_state, bad_evals = saved["best_state"], saved["bad_evals"]
        best_key = saved.get("best_key")
        if best_key is None and saved.get("best_loss") is not None:  # saved before scoring
            best_key = (0.0, -saved["best_loss"])
        history, initial = saved["history"], saved["initial"]
    resumed_at = step
    if initial is None and validation_items:
        initial = validation_loss(model, validation_items, settings.batch_size, pad_id, **options)
        history.append({"step": 0, "validation_loss": initial})

    started = time.perf_counter()
    run_tokens = 0
    stopped_early = False
    bar = tqdm(
        total=total,
        initial=step,
        desc="train",
        unit="step",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    )
    with bar:
        while step < total and not stopped_early:
            epoch, position = divmod(step, per_epoch)
            order = epoch_order(len(train_items), settings.seed, epoch)
            start = position * settings.batch_size
            chunk = [train_items[i] for i in order[start : start + settings.batch_size]]
            batch = collate(chunk, pad_id, device)
            loss = batch_loss(model, batch, **options)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            n = int(batch["attention_mask"].sum())
            tokens += n
            run_tokens += n
            losses.append(loss.item())
            rate = run_tokens / max(time.perf_counter() - started, 1e-9)
            bar.set_postfix(loss=f"{losses[-1]:.4f}", tok_s=f"{rate:.0f}", refresh=False)
            bar.update(1)
            if not progress and (step % max(1, total // 10) == 0 or step == total):
                _log_step(out, step, total, losses[-1], time.perf_counter() - started, resumed_at)

            if validation_items and (step % eval_every == 0 or step == total):
                current = validation_loss(
                    model, validation_items, settings.batch_size, pad_id, **options
                )
                entry = {"step": step, "validation_loss": current}
                score = 0.0
                if validate is not None:
                    bar.set_description("validate (generating)", refresh=True)
                    score = entry["agreement"] = validate(model, tokenizer)
                    bar.set_description("train", refresh=False)
                    bar.set_postfix(loss=f"{losses[-1]:.4f}", agreement=f"{score:.1%}")
                history.append(entry)
                log.info(
                    "training %s: step %d/%d, validation loss %.4f%s",
                    out.name,
                    step,
                    total,
                    current,
                    f", agreement {score:.1%}" if validate is not None else "",
                )
                key = (score, -current)
                if best_key is None or key > best_key:
                    best_key, bad_evals = key, 0
                    best_state = {
                        k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()
                    }
                else:
                    bad_evals += 1
                    stopped_early = bad_evals >= settings.patience and step < total
                target = settings.target_agreement
                if validate is not None and target is not None and score >= target:
                    stopped_early = step < total  # the target is reached: no need to go on
            if step % checkpoint_every == 0 and step < total and not stopped_early:
                _save_checkpoint(
                    checkpoint,
                    {
                        "adapter": get_peft_model_state_dict(model),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "rng": torch.get_rng_state(),
                        "step": step,
                        "tokens": tokens,
                        "losses": losses,
                        "best_key": best_key,
                        "best_state": best_state,
                        "bad_evals": bad_evals,
                        "history": history,
                        "initial": initial,
                        "settings": settings.run_json(),
                    },
                )
            if on_step is not None:
                on_step(step, losses[-1])
    seconds = time.perf_counter() - started
    if best_state is not None:
        set_peft_model_state_dict(model, best_state)  # keep the adapter the validation liked best
    model.eval()
    adapter_dir = save_adapter(model, out / "adapter", base_dir)
    merged_dir = merge_adapter(model, tokenizer, out / "merged") if settings.merge else None
    for leftover in (checkpoint, checkpoint.with_name("checkpoint.old")):
        shutil.rmtree(leftover, ignore_errors=True)  # finished: nothing left to resume
    last_epoch = losses[-min(len(losses), per_epoch) :]
    return TrainResult(
        adapter_dir=adapter_dir,
        merged_dir=merged_dir,
        base_dir=base_dir,
        train_loss=sum(last_epoch) / max(len(last_epoch), 1),
        validation_loss=-best_key[1] if best_key else None,
        initial_validation_loss=initial,
        validation_agreement=best_key[0] if validate is not None and best_key else None,
        steps=step,
        tokens=tokens,
        seconds=seconds,
        tokens_per_second=run_tokens / max(seconds, 1e-9),
        stopped_early=stopped_early,
        resumed_at=resumed_at,
        device=device,
        history=tuple(history),
        train_examples=len(train_examples),
        validation_examples=len(validation_examples),
    )
