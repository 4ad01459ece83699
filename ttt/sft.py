"""Behaviour cloning for ReST-EM: LoRA SFT on the rewarded self-edits, with TRL's `SFTTrainer`, resumable after a kill.

The outer loop of SEAL trains one adapter per ReST-EM round on every rewarded self-edit. That run is long enough
to be killed (pre-emption, OOM, a timeout), so it checkpoints, and it checkpoints at a rate that keeps the cost of
saving to a fixed share of training time (`save_overhead`): a callback times every save and asks for the next one
only after `last_save_seconds / save_overhead` seconds of training. A killed run then redoes at most one
checkpoint interval, and because the checkpoint holds the optimizer, the scheduler, the RNG states and the data
position, the resumed run's losses and final adapter equal an uninterrupted run's exactly.

TRL does not write checkpoints atomically and `resume_from_checkpoint=True` takes the highest-numbered folder even
when a kill left it half-written, so resuming picks the newest *complete* checkpoint (its `trainer_state.json`,
written last, parses) and deletes incomplete ones.

Rows arrive pre-tokenised (`EncodedExample`, labels masked with IGNORE_INDEX by message boundaries); they reach TRL as
`input_ids` + `completion_mask` with `completion_only_loss=True`, so the loss covers exactly the tokens this project's
tokenizer-agnostic masks mark, whatever the chat template. Rows longer than `max_len` are dropped, never truncated.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ttt import memory
from ttt.examples import IGNORE_INDEX, EncodedExample
from ttt.lora import SEAL_TARGETS, _atomic_replace_dir, _sort_config_lists, keep_lora_sums_fp32
from ttt.merge import _fsync_tree
from ttt.train import DTYPES, LR_SCHEDULES, resolve_precision

CHECKPOINTS = "checkpoints"
ADAPTER = "adapter"
INPUTS_FILE = "sft_inputs.json"  # fingerprint of what the checkpoints were trained on
TIMING_FILE = "sft_save_timing.json"  # the measured save cost, so a resumed run need not measure it again
CHECKPOINT_PREFIX = "checkpoint-"
# Written by transformers' Trainer; trainer_state.json is written after the others, so its presence completes a folder.
CHECKPOINT_FILES = ("adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth")
TRAINER_STATE = "trainer_state.json"
KEEP_CHECKPOINTS = 2  # the newest one can be incomplete only until the next one is written, so two always suffice
FIRST_SAVE_AFTER_STEPS = 1  # the adaptive rule needs one save's duration before it can space the others

# (event, global step): "step" after each optimizer step, "save" after each checkpoint.
Progress = Callable[[str, int], None]


@dataclass(frozen=True)
class SftSettings:
    """One ReST-EM behaviour-cloning run; defaults are SEAL's ARC ReST-EM step (LoRA rank 16, 8 epochs, lr 5e-5).

    `save_every_steps` forces a fixed checkpoint interval (tests, benchmarks); None spaces checkpoints adaptively so
    that saving costs at most `save_overhead` of training time.
    """

    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = SEAL_TARGETS
    epochs: int = 8
    batch_size: int = 5
    grad_accum: int = 1
    lr: float = 5e-5
    schedule: str = "cosine"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    dtype: str = "auto"
    grad_checkpointing: bool = False
    seed: int = 0
    save_overhead: float = 0.10
    save_every_steps: int | None = None
    max_len: int = 8192

    def __post_init__(self) -> None:
        checks = [
            (self.rank >= 1, "rank", f"must be >= 1, got {self.rank}"),
            (self.alpha > 0, "alpha", f"must be > 0, got {self.alpha}"),
            (0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}"),
            (len(self.targets) > 0, "targets", "needs at least one module name"),
            (self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}"),
            (self.grad_accum >= 1, "grad_accum", f"must be >= 1, got {self.grad_accum}"),
            (self.lr > 0, "lr", f"must be > 0, got {self.lr}"),
            (self.schedule in LR_SCHEDULES, "schedule", f"{self.schedule!r}: expected one of {LR_SCHEDULES}"),
            (self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}"),
            (self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}"),
            (self.max_grad_norm > 0, "max_grad_norm", f"must be > 0, got {self.max_grad_norm}"),
            (self.dtype in DTYPES, "dtype", f"{self.dtype!r}: expected one of {DTYPES}"),
            (0 < self.save_overhead < 1, "save_overhead", f"must be in (0, 1), got {self.save_overhead}"),
            (
                self.save_every_steps is None or self.save_every_steps >= 1,
                "save_every_steps",
                f"must be >= 1 or None, got {self.save_every_steps}",
            ),
            (self.max_len >= 2, "max_len", f"must be >= 2, got {self.max_len}"),
        ]
        for ok, name, message in checks:
            if not ok:
                raise ValueError(f"SftSettings.{name} {message}")

    def fingerprint_fields(self) -> dict[str, Any]:
        """The settings that change what is trained (checkpoint spacing does not)."""
        values = asdict(self)
        for key in ("save_overhead", "save_every_steps"):
            values.pop(key)
        return values


@dataclass
class SftResult:
    losses: list[float] = field(default_factory=list)  # one per optimizer step, across resumes
    learning_rates: list[float] = field(default_factory=list)
    steps: int = 0
    epochs: int = 0
    rows_used: int = 0
    rows_dropped_too_long: int = 0
    rows_dropped_no_loss: int = 0
    resumed_from_step: int | None = None  # None: a fresh run
    checkpoints_saved: int = 0  # by this call
    checkpoint_steps: list[int] = field(default_factory=list)  # global steps saved by this call
    checkpoint_interval_steps: int | None = None  # the widest spacing between this call's saves (None: no save)
    save_seconds: float = 0.0
    train_seconds: float = 0.0  # wall time of this call's training loop, saves included
    forward_backward_seconds: float = 0.0  # inside the trainer's training_step: forward, loss and backward
    adapter_dir: Path | None = None
    precision: str = ""

    @property
    def save_share(self) -> float:
        """The share of this call's training wall time that went into checkpoints."""
        return self.save_seconds / self.train_seconds if self.train_seconds > 0 else 0.0


# ------------------------------------------------------------------------------------------------------------------
# Rows


def _select_rows(rows: Sequence[EncodedExample], max_len: int) -> tuple[list[EncodedExample], int, int]:
    """(usable rows, dropped as too long, dropped for having no loss token)."""
    kept: list[EncodedExample] = []
    too_long = no_loss = 0
    for row in rows:
        if row.num_tokens > max_len:
            too_long += 1
        elif row.num_loss_tokens == 0:
            no_loss += 1
        else:
            kept.append(row)
    return kept, too_long, no_loss


def _dataset(rows: Sequence[EncodedExample]) -> Any:
    """TRL's pre-tokenised format: `completion_mask[i]` = 1 where `labels[i]` carries a loss (labels are unshifted)."""
    from datasets import Dataset, disable_progress_bars

    disable_progress_bars()  # TRL maps the rows twice; a progress bar for six rows is noise in every log
    return Dataset.from_dict(
        {
            "input_ids": [list(row.input_ids) for row in rows],
            "completion_mask": [[int(label != IGNORE_INDEX) for label in row.labels] for row in rows],
        }
    )


def _fingerprint(model_path: str, rows: Sequence[EncodedExample], settings: SftSettings) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"model": str(model_path), "settings": settings.fingerprint_fields()}).encode())
    for row in rows:
        digest.update(json.dumps([row.input_ids, row.labels]).encode())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------------------------
# Checkpoints


def _checkpoint_step(folder: Path) -> int | None:
    suffix = folder.name[len(CHECKPOINT_PREFIX) :]
    return int(suffix) if folder.name.startswith(CHECKPOINT_PREFIX) and suffix.isdigit() else None


def is_complete_checkpoint(folder: Path) -> bool:
    """True when the Trainer finished writing `folder`: its state file (written last) parses and the rest exists."""
    try:
        state = json.loads((folder / TRAINER_STATE).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(state, dict) or state.get("global_step") != _checkpoint_step(folder):
        return False
    return all((folder / name).is_file() and (folder / name).stat().st_size > 0 for name in CHECKPOINT_FILES)


def newest_complete_checkpoint(checkpoints: Path, *, delete_incomplete: bool = False) -> Path | None:
    """The complete checkpoint with the highest step; incomplete ones are deleted when asked (a new save with the
    same step would otherwise write into a half-written folder)."""
    if not checkpoints.is_dir():
        return None
    found = sorted(
        (step, folder)
        for folder in checkpoints.iterdir()
        if folder.is_dir() and (step := _checkpoint_step(folder)) is not None
    )
    newest = None
    for _, folder in found:
        if is_complete_checkpoint(folder):
            newest = folder
        elif delete_incomplete:
            shutil.rmtree(folder, ignore_errors=True)
    return newest


def _check_inputs(checkpoints: Path, fingerprint: str) -> None:
    """Refuse to resume checkpoints that were trained on other rows, settings or base model."""
    path = checkpoints / INPUTS_FILE
    if path.is_file():
        try:
            saved = json.loads(path.read_text()).get("fingerprint")
        except ValueError:
            saved = None  # torn by a kill before any checkpoint could exist: rewrite it
        if saved is not None and saved != fingerprint:
            raise ValueError(
                f"{checkpoints}: holds checkpoints of a different SFT run (other rows, settings or model); "
                "use a fresh work_dir or delete the folder"
            )
    checkpoints.mkdir(parents=True, exist_ok=True)
    tmp = checkpoints / f".{INPUTS_FILE}.{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps({"fingerprint": fingerprint}) + "\n")
    os.replace(tmp, path)


def _read_save_seconds(checkpoint: Path | None) -> float | None:
    if checkpoint is None:
        return None
    try:
        return float(json.loads((checkpoint / TIMING_FILE).read_text())["save_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ------------------------------------------------------------------------------------------------------------------
# The save scheduler


def _save_scheduler(
    settings: SftSettings, checkpoints: Path, last_save_seconds: float | None, progress: Progress | None
) -> Any:
    from transformers import TrainerCallback

    class SaveScheduler(TrainerCallback):
        """Asks for a checkpoint once training since the last save has paid for the next save.

        The Trainer calls `on_step_end`, then saves if `control.should_save`, then calls `on_save`; the time between
        the two calls is the save's cost. Saves are never asked for at the final step: the adapter is written then.
        """

        def __init__(self) -> None:
            self.last_save_seconds = last_save_seconds
            self.mark = time.perf_counter()  # end of the last save, or the start of this call's training
            self.requested_at: float | None = None
            self.start_step = 0
            self.saved_steps: list[int] = []
            self.save_seconds = 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.mark = time.perf_counter()
            self.start_step = state.global_step

        def _due(self, step: int) -> bool:
            if settings.save_every_steps is not None:
                return step % settings.save_every_steps == 0
            if self.last_save_seconds is None:
                return step - self.start_step >= FIRST_SAVE_AFTER_STEPS
            return time.perf_counter() - self.mark >= self.last_save_seconds / settings.save_overhead

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            memory.log_step(state.global_step)
            if progress is not None:
                progress("step", state.global_step)
            if state.global_step < state.max_steps and self._due(state.global_step):
                control.should_save = True
                self.requested_at = time.perf_counter()

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            now = time.perf_counter()
            seconds = now - (self.requested_at if self.requested_at is not None else now)
            self.last_save_seconds = seconds
            self.save_seconds += seconds
            self.saved_steps.append(state.global_step)
            folder = checkpoints / f"{CHECKPOINT_PREFIX}{state.global_step}"
            with contextlib.suppress(OSError):
                (folder / TIMING_FILE).write_text(json.dumps({"save_seconds": seconds}) + "\n")
            if progress is not None:
                progress("save", state.global_step)
            self.mark = time.perf_counter()

    return SaveScheduler()


# ------------------------------------------------------------------------------------------------------------------
# Training


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _sft_config(settings: SftSettings, checkpoints: Path, precision_name: str, on_cpu: bool) -> Any:
    from trl import SFTConfig

    schedule = "constant_with_warmup" if settings.schedule == "constant" else settings.schedule
    # After an out-of-memory error the micro-batch shrinks and accumulation grows by the same factor: the same
    # update, and the same checkpoints (their fingerprint holds the configured batch, not this split).
    micro, factor = memory.split_batch(settings.batch_size)
    memory.note_batch(micro)
    return SFTConfig(
        output_dir=str(checkpoints),
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=settings.grad_accum * factor,
        learning_rate=settings.lr,
        lr_scheduler_type=schedule,
        warmup_steps=settings.warmup_steps,
        weight_decay=settings.weight_decay,
        max_grad_norm=settings.max_grad_norm,
        optim="adamw_torch_fused",  # one kernel for all LoRA tensors, on CPUs too
        # TRL defaults bf16 and gradient checkpointing on: both set explicitly from the resolved precision.
        bf16=precision_name == "bf16",
        fp16=precision_name == "fp16",
        use_cpu=on_cpu,
        # transformers 5.23 renamed gradient_checkpointing*; the new names win over TRL's `True` default of the old.
        activation_checkpointing=settings.grad_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if settings.grad_checkpointing else {},
        seed=settings.seed,
        data_seed=settings.seed,
        # Rows are pre-tokenised and pre-filtered by length: no truncation, packing or padding-free layout.
        max_length=None,
        packing=False,
        padding_free=False,
        completion_only_loss=True,
        shuffle_dataset=False,
        logging_strategy="steps",
        logging_steps=1,
        save_strategy="no",  # the SaveScheduler callback decides
        save_total_limit=KEEP_CHECKPOINTS,
        save_only_model=False,
        report_to=[],
        push_to_hub=False,
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=not on_cpu,
        remove_unused_columns=True,
    )


def _load_base(model_path: str, precision: str, device: torch.device) -> Any:
    from transformers import AutoModelForCausalLM

    # bf16 on a CPU stores the frozen base weights in bf16 (autocast over fp32 weights would cast them at every
    # forward); the LoRA weights stay fp32 either way (PEFT upcasts adapters on a half-precision base).
    dtype = torch.bfloat16 if precision == "bf16" and device.type == "cpu" else torch.float32
    return AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)


def _with_lora(model: Any, settings: SftSettings) -> Any:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        # PEFT 0.21 reads transformers 5's deprecated `is_gradient_checkpointing`: noise, not ours to fix.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = get_peft_model(model, config)
    keep_lora_sums_fp32(model)  # bf16 on a CPU: LoRA sums in fp32 (ttt/lora.py), under the Trainer's bf16 autocast
    return model


def _history(log_history: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Per-step (losses, learning rates) from the Trainer's log, which a resume carries over from the checkpoint."""
    by_step: dict[int, dict[str, Any]] = {}
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            by_step[int(entry["step"])] = entry
    steps = sorted(by_step)
    return [float(by_step[s]["loss"]) for s in steps], [float(by_step[s].get("learning_rate", 0.0)) for s in steps]


def _remove_stale_temporaries(work_dir: Path) -> None:
    """A kill during the final adapter save leaves its temporary folder behind (no `finally` runs under SIGKILL)."""
    if work_dir.is_dir():
        for stale in work_dir.glob(f".tmp-{ADAPTER}-*"):
            shutil.rmtree(stale, ignore_errors=True)


def _save_adapter(model: Any, final: Path) -> Path:
    """Write the trained adapter atomically: the folder appears complete or not at all."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        _sort_config_lists(tmp / "adapter_config.json")
        _fsync_tree(tmp)
        _atomic_replace_dir(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def train_sft(
    model_path: str,
    tokenizer: Any,
    rows: Sequence[EncodedExample],
    settings: SftSettings,
    work_dir: Path,
    *,
    progress: Progress | None = None,
) -> SftResult:
    """Train a LoRA adapter on `rows` (completion-only loss) and write it to `work_dir/adapter`.

    Checkpoints go to `work_dir/checkpoints`; when that folder holds a complete checkpoint of the same inputs the
    run resumes from it, and its losses continue the interrupted run's exactly. The checkpoints are deleted once the
    adapter is written. `progress`, if given, hears of every optimizer step and every save (tests, benchmarks).
    """
    from transformers import PrinterCallback, set_seed
    from trl import SFTTrainer

    if not rows:
        raise ValueError("no rows to train on (handle 'no rewarded self-edit' before calling train_sft)")
    used, too_long, no_loss = _select_rows(rows, settings.max_len)
    if not used:
        raise ValueError(
            f"no rows left to train on: {too_long} longer than max_len={settings.max_len}, "
            f"{no_loss} without loss tokens"
        )
    work_dir = Path(work_dir)
    _remove_stale_temporaries(work_dir)
    checkpoints = work_dir / CHECKPOINTS
    _check_inputs(checkpoints, _fingerprint(model_path, used, settings))
    resume = newest_complete_checkpoint(checkpoints, delete_incomplete=True)

    device = _device()
    precision = resolve_precision(settings.dtype, device)
    set_seed(settings.seed)  # before LoRA is attached, so every run starts from the same adapter weights
    model = _with_lora(_load_base(model_path, precision.name, device), settings)
    scheduler = _save_scheduler(settings, checkpoints, _read_save_seconds(resume), progress)

    class TimedTrainer(SFTTrainer):  # type: ignore[misc]
        """Counts the time spent in forward and backward, for the iteration benchmark's overhead share."""

        forward_backward_seconds = 0.0

        def training_step(self, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return super().training_step(*args, **kwargs)
            finally:
                self.forward_backward_seconds += time.perf_counter() - start

    trainer = TimedTrainer(
        model=model,
        args=_sft_config(settings, checkpoints, precision.name, device.type != "cuda"),
        train_dataset=_dataset(used),
        processing_class=tokenizer,
        callbacks=[scheduler],
    )
    trainer.remove_callback(PrinterCallback)  # it prints every step's log dict to stdout
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    train_seconds = time.perf_counter() - started

    adapter_dir = _save_adapter(trainer.model, work_dir / ADAPTER)
    losses, learning_rates = _history(trainer.state.log_history)
    shutil.rmtree(checkpoints, ignore_errors=True)
    return SftResult(
        losses=losses,
        learning_rates=learning_rates,
        steps=int(trainer.state.global_step),
        epochs=settings.epochs,
        rows_used=len(used),
        rows_dropped_too_long=too_long,
        rows_dropped_no_loss=no_loss,
        resumed_from_step=_checkpoint_step(resume) if resume is not None else None,
        checkpoints_saved=len(scheduler.saved_steps),
        checkpoint_steps=list(scheduler.saved_steps),
        checkpoint_interval_steps=_widest_gap(scheduler.start_step, scheduler.saved_steps),
        save_seconds=scheduler.save_seconds,
        train_seconds=train_seconds,
        forward_backward_seconds=trainer.forward_backward_seconds,
        adapter_dir=adapter_dir,
        precision=precision.name,
    )


def _widest_gap(start: int, saved: list[int]) -> int | None:
    if not saved:
        return None
    marks = [start, *saved]
    return max(b - a for a, b in itertools.pairwise(marks))
