"""The inner training loop: plain PyTorch over padding-free batches.

No compute is spent on padding. On a GPU each micro-batch packs its examples into one row with per-sequence
position ids (and no attention mask, no KV cache), which transformers turns into a block-diagonal causal mask, so no
sequence attends to another. On the CPU each example gets its own forward instead ("sequential"): one thread gains
nothing from a taller matrix, while the block-diagonal mask doubles the attention and element-wise cost (measured on
SmolLM2: 2 x 300 tokens packed 4.6-6.4 CPU-s per forward+backward, sequential 3.9). Logits are computed only at
positions whose next token carries a loss, which skips most of the vocabulary projection when the loss is on output
tokens only. The loss of an optimizer step is the mean over all its loss tokens, the same value one unpadded forward
per sequence gives, whichever way the batch is laid out.

Dtype policy (`auto`): on a CPU, bf16 where it has bf16 matrix hardware (`ttt/cpu_features.py`: AMX or AVX512-BF16,
overridable with SEAL_CPU_BF16), fp32 elsewhere; bf16 autocast on GPUs that have bf16 (Ampere and newer); fp16
autocast with fp32 LoRA weights and a gradient scaler on GPUs without it (T4), because pure fp16 training diverges
there and bf16 is emulated. bf16 means base weights stored in bf16 (the caller loads them so), LoRA weights in fp32
(PEFT keeps adapters fp32 on a half-precision base) and bf16 autocast; on a CPU the LoRA sums are also kept in fp32
(`ttt/lora.py::keep_lora_sums_fp32`: bf16 outputs round a small update away).
"""

from __future__ import annotations

import math
import random
import resource
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ttt import cpu_features, memory
from ttt.examples import IGNORE_INDEX, EncodedExample
from ttt.settings import DTYPES, LR_SCHEDULES, PACKINGS, TrainSettings  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class Precision:
    name: str  # "fp32" | "bf16" | "fp16"
    autocast_dtype: torch.dtype | None
    grad_scaler: bool


def resolve_precision(dtype: str, device: torch.device) -> Precision:
    """The dtype policy for `dtype` ("auto", "fp32", "bf16", "fp16") on `device`."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected one of {DTYPES}")
    fp32 = Precision("fp32", None, False)
    bf16 = Precision("bf16", torch.bfloat16, False)
    fp16 = Precision("fp16", torch.float16, True)
    if device.type != "cuda":
        if dtype == "fp16":
            raise ValueError("dtype fp16 (with loss scaling) needs a CUDA GPU; use fp32 or auto on the CPU")
        if dtype == "auto":
            return bf16 if cpu_features.auto_uses_bf16() else fp32
        return bf16 if dtype == "bf16" else fp32
    has_bf16 = torch.cuda.get_device_capability(device)[0] >= 8 and torch.cuda.is_bf16_supported()
    if dtype == "bf16" and not has_bf16:
        name = torch.cuda.get_device_name(device)
        raise ValueError(f"dtype bf16: {name} has no native bf16 (e.g. a T4); use fp16 or auto")
    if dtype == "auto":
        return bf16 if has_bf16 else fp16
    return {"fp32": fp32, "bf16": bf16, "fp16": fp16}[dtype]


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)  # one per optimizer step
    learning_rates: list[float] = field(default_factory=list)
    steps: int = 0
    epochs_run: int = 0
    capped: bool = False  # SEAL's step cap turned training off
    examples: int = 0
    skipped_too_long: int = 0
    skipped_no_loss: int = 0
    tokens: int = 0  # tokens forwarded (no padding exists to count)
    loss_tokens: int = 0
    seconds: float = 0.0
    forward_backward_seconds: float = 0.0
    optimizer_seconds: float = 0.0
    peak_memory_bytes: int | None = None
    peak_memory_kind: str = ""
    precision: str = ""
    packing: str = ""

    @property
    def other_seconds(self) -> float:
        """Wall time not spent in forward, backward or the optimizer (batching, setup, bookkeeping)."""
        return max(0.0, self.seconds - self.forward_backward_seconds - self.optimizer_seconds)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "other_seconds": self.other_seconds, "tokens_per_second": self.tokens_per_second}


# ------------------------------------------------------------------------------------------------------------------
# Packing


@dataclass(frozen=True)
class PackedBatch:
    input_ids: torch.Tensor  # [1, T]: the examples back to back
    position_ids: torch.Tensor  # [1, T]: restarting at 0 for each example
    keep: torch.Tensor  # [K]: positions whose next token carries a loss
    targets: torch.Tensor  # [K]: those next tokens

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def num_loss_tokens(self) -> int:
        return int(self.targets.shape[0])


def pack_examples(examples: Sequence[EncodedExample], device: torch.device | str = "cpu") -> PackedBatch:
    """Concatenate examples into one padding-free row; targets are shifted within each example only."""
    if not examples:
        raise ValueError("pack_examples: no examples")
    ids: list[int] = []
    positions: list[int] = []
    keep: list[int] = []
    targets: list[int] = []
    for example in examples:
        offset = len(ids)
        ids.extend(example.input_ids)
        positions.extend(range(len(example.input_ids)))
        for index, label in enumerate(example.labels[1:]):
            if label != IGNORE_INDEX:
                keep.append(offset + index)
                targets.append(label)
    as_tensor = lambda values: torch.tensor(values, dtype=torch.long, device=device)  # noqa: E731
    return PackedBatch(as_tensor([ids]), as_tensor([positions]), as_tensor(keep), as_tensor(targets))


def packed_loss_sum(model: Any, batch: PackedBatch) -> torch.Tensor:
    """Summed cross-entropy over the batch's loss tokens (logits computed only where needed)."""
    output = model(
        input_ids=batch.input_ids,
        position_ids=batch.position_ids,
        use_cache=False,
        logits_to_keep=batch.keep,
    )
    logits = output.logits.reshape(-1, output.logits.shape[-1])
    return F.cross_entropy(logits.float(), batch.targets, reduction="sum")


# ------------------------------------------------------------------------------------------------------------------
# Schedules, memory, helpers


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Learning-rate multiplier at optimizer step `step` (0-based); the same formulas as transformers' schedulers."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def seal_epochs(epochs: int, num_examples: int, batch_size: int, cap: int | None) -> tuple[int, bool]:
    """SEAL's step cap: training is switched off (epochs 0) when epochs * |data| // batch exceeds the cap."""
    if cap is not None and epochs * num_examples // batch_size > cap:
        return 0, True
    return epochs, False


_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        _CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def _peak_memory(device: torch.device) -> tuple[int | None, str]:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024, "rss_peak"
    except OSError:
        pass
    # No /proc (macOS): the peak since the process started, in bytes there.
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss), "rss_peak_since_start"


def _model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _hf_model(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _autocast(precision: Precision, device: torch.device) -> Any:
    if precision.autocast_dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=precision.autocast_dtype)


def _set_checkpointing(model: Any, enable: bool) -> None:
    hf = _hf_model(model)
    if enable:
        hf.activation_checkpointing_enable({"use_reentrant": False})
    else:
        hf.activation_checkpointing_disable()
    # transformers also makes the embeddings' output require grad, which only reentrant checkpointing needs, and
    # (for a PEFT-wrapped model) never removes that hook again: remove it so calls do not pile up hooks.
    hf.disable_input_require_grads()


# ------------------------------------------------------------------------------------------------------------------
# The loop


def train(
    model: Any,
    examples: Sequence[EncodedExample],
    settings: TrainSettings,
    *,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train the trainable parameters of `model` (an AdapterSlot or a module) on `examples`; return metrics."""
    model = getattr(model, "model", model) if not isinstance(model, torch.nn.Module) else model
    started = time.perf_counter()
    device = _model_device(model)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    precision = resolve_precision(settings.dtype, device)
    params = [param for param in model.parameters() if param.requires_grad]
    if not params:
        raise ValueError("train: the model has no trainable parameters (attach an adapter first)")
    if precision.grad_scaler:
        for param in params:  # loss scaling needs fp32 master weights
            if param.dtype != torch.float32:
                param.data = param.data.float()

    packed = settings.packing == "packed" or (settings.packing == "auto" and device.type == "cuda")
    result = TrainResult(precision=precision.name, packing="packed" if packed else "sequential")
    usable = []
    max_len = memory.context_limit(settings.max_len)  # lowered after an out-of-memory error (ttt/memory.py)
    for example in examples:
        if example.num_tokens > max_len:
            result.skipped_too_long += 1
        elif example.num_loss_tokens == 0:
            result.skipped_no_loss += 1
        else:
            usable.append(example)
    result.examples = len(usable)
    epochs, result.capped = seal_epochs(settings.epochs, len(usable), settings.batch_size, settings.max_steps_cap)
    micro_per_epoch = math.ceil(len(usable) / settings.batch_size)
    steps_per_epoch = math.ceil(micro_per_epoch / settings.grad_accum)
    total_steps = epochs * steps_per_epoch

    torch.manual_seed(settings.seed)  # dropout, if any; data order has its own generator below
    order_rng = random.Random(settings.seed)
    # Fused AdamW: one kernel for all LoRA tensors; on this project's CPUs 2.5x faster than the per-tensor loop.
    optimizer = torch.optim.AdamW(
        params, lr=settings.lr, weight_decay=settings.weight_decay, fused=device.type in ("cuda", "cpu")
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, settings.warmup_steps, settings.lr_schedule)
    )
    scaler = torch.amp.GradScaler("cuda") if precision.grad_scaler else None
    was_training = model.training
    checkpointing = settings.grad_checkpointing and total_steps > 0
    _reset_peak_memory(device)
    try:
        if checkpointing:
            _set_checkpointing(model, True)
        model.train()
        for epoch in range(epochs):
            order = list(range(len(usable)))
            order_rng.shuffle(order)
            micro = [order[i : i + settings.batch_size] for i in range(0, len(order), settings.batch_size)]
            for step_in_epoch in range(steps_per_epoch):
                group = micro[step_in_epoch * settings.grad_accum : (step_in_epoch + 1) * settings.grad_accum]
                if packed:  # after an out-of-memory error, each micro-batch runs as several smaller passes
                    size = max(len(indices) for indices in group)
                    step_rows = memory.micro_batch(size)
                    batches = [
                        pack_examples([usable[i] for i in indices[at : at + step_rows]], device)
                        for indices in group
                        for at in range(0, len(indices), step_rows)
                    ]
                else:
                    step_rows = 1
                    batches = [pack_examples([usable[i]], device) for indices in group for i in indices]
                memory.note_batch(step_rows)
                step_loss_tokens = sum(batch.num_loss_tokens for batch in batches)
                step_loss = torch.zeros((), device=device)
                sync()
                fb_started = time.perf_counter()
                for batch in batches:
                    with _autocast(precision, device):
                        loss = packed_loss_sum(model, batch) / step_loss_tokens
                    (scaler.scale(loss) if scaler is not None else loss).backward()
                    step_loss += loss.detach()
                    result.tokens += batch.num_tokens
                sync()
                opt_started = time.perf_counter()
                result.forward_backward_seconds += opt_started - fb_started
                result.learning_rates.append(scheduler.get_last_lr()[0])
                if scaler is not None:
                    scaler.unscale_(optimizer)
                if settings.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                loss_value = float(step_loss)
                sync()
                result.optimizer_seconds += time.perf_counter() - opt_started
                result.losses.append(loss_value)
                result.loss_tokens += step_loss_tokens
                result.steps += 1
                memory.log_step(result.steps, loss=loss_value)
                if on_step is not None:
                    on_step(result.steps, loss_value)
            result.epochs_run = epoch + 1
    finally:
        if checkpointing:
            _set_checkpointing(model, False)
        model.train(was_training)
        for param in params:
            param.grad = None
    result.peak_memory_bytes, result.peak_memory_kind = _peak_memory(device)
    result.seconds = time.perf_counter() - started
    return result


@torch.no_grad()
def mean_loss(model: Any, examples: Sequence[EncodedExample], *, batch_size: int = 4, dtype: str = "auto") -> float:
    """Mean cross-entropy per loss token over `examples` (the held-out measure: no padding, no dropout).

    `batch_size` examples are packed per forward on CUDA; on the CPU each example has its own forward (faster there).
    """
    model = getattr(model, "model", model) if not isinstance(model, torch.nn.Module) else model
    device = _model_device(model)
    precision = resolve_precision(dtype, device)
    usable = [example for example in examples if example.num_loss_tokens > 0]
    if not usable:
        raise ValueError("mean_loss: no example has loss tokens")
    per_forward = batch_size if device.type == "cuda" else 1
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for start in range(0, len(usable), per_forward):
            batch = pack_examples(usable[start : start + per_forward], device)
            with _autocast(precision, device):
                total += float(packed_loss_sum(model, batch))
            count += batch.num_loss_tokens
    finally:
        model.train(was_training)
    return total / count
