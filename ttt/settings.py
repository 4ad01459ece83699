"""The inner loop's settings, torch-free: the one place their defaults live.

`ttt.train` and `ttt.lora` use them; the run config (`runners/config.py`) takes its defaults from them, so a default
changed here changes everywhere, and the CLI, the config and `seal grade` stay importable without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

SEAL_TARGETS = ("q_proj", "v_proj", "gate_proj", "down_proj", "up_proj")


@dataclass(frozen=True)
class LoraSettings:
    """LoRA shape; defaults are SEAL's ARC inner loop (rank 128, alpha 16, no dropout, five projections)."""

    rank: int = 128
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = SEAL_TARGETS

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")
        if not self.targets:
            raise ValueError("LoRA targets: at least one module name is needed")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")


LR_SCHEDULES = ("cosine", "linear", "constant")
DTYPES = ("auto", "fp32", "bf16", "fp16")
PACKINGS = ("auto", "packed", "sequential")  # auto: packed on CUDA, sequential elsewhere


@dataclass(frozen=True)
class TrainSettings:
    """Everything one inner-loop training call needs; defaults follow SEAL's ARC inner loop (§A5)."""

    lr: float = 1e-4
    epochs: int = 2
    batch_size: int = 2
    grad_accum: int = 1
    warmup_steps: int = 11
    lr_schedule: str = "cosine"
    # SEAL: when epochs * len(data) // batch_size exceeds this, epochs becomes 0 (no training). None: no cap.
    max_steps_cap: int | None = 375
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0  # HF Trainer's default, which SEAL inherits
    grad_checkpointing: bool = False
    dtype: str = "auto"
    max_len: int = 8192  # longer examples are skipped (and counted), never truncated
    packing: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.grad_accum >= 1, f"grad_accum must be >= 1, got {self.grad_accum}"),
            (self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}"),
            (self.lr_schedule in LR_SCHEDULES, f"lr_schedule {self.lr_schedule!r}: expected one of {LR_SCHEDULES}"),
            (self.max_steps_cap is None or self.max_steps_cap >= 0, "max_steps_cap must be >= 0 or None"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.max_grad_norm is None or self.max_grad_norm > 0, "max_grad_norm must be > 0 or None"),
            (self.dtype in DTYPES, f"dtype {self.dtype!r}: expected one of {DTYPES}"),
            (self.max_len >= 2, f"max_len must be >= 2, got {self.max_len}"),
            (self.packing in PACKINGS, f"packing {self.packing!r}: expected one of {PACKINGS}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"TrainSettings: {message}")
