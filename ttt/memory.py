"""Memory pressure: what an out-of-memory error inside a unit changes, and a log of memory per training step.

When a unit runs out of memory (CUDA's `OutOfMemoryError`, or the CPU allocator's), the stage runner frees what
the failed attempt held and calls `shrink()`: the micro-batch halves first (the training loop splits each optimizer
step into more, smaller forward/backward passes, so the effective batch and the update are unchanged; the
generators decode fewer rows at once), and once the last run batch was a single row, the context halves (training
examples longer than the reduced limit are skipped and counted). The unit is then retried with that state, which
holds for the rest of the stage in this worker and is written into each journal line it affects.

`log_step` appends one JSON line per optimizer step to the run's memory log (when the stage runner configured
one): resident memory and, on CUDA, allocated / reserved / peak bytes. This module never imports torch itself, so
the torch-free parts of the runner can use it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

# Set before torch is imported (runners/cli does it first thing): fragmentation-resistant CUDA segments. Both
# names, since torch renamed the variable (PYTORCH_ALLOC_CONF) and still reads the old one.
ALLOCATOR_SETTINGS = {
    "PYTORCH_ALLOC_CONF": "expandable_segments:True",
    "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
}


def configure_allocator() -> None:
    """Set the allocator variables unless the user set them; a no-op once torch is imported (too late then)."""
    if "torch" in sys.modules:
        return
    for name, value in ALLOCATOR_SETTINGS.items():
        os.environ.setdefault(name, value)


@dataclass
class Backoff:
    """The current shrink factors and the batch size the last memory user ran with."""

    batch_divisor: int = 1
    context_divisor: int = 1
    last_batch: int = 1

    @property
    def degraded(self) -> bool:
        return self.batch_divisor > 1 or self.context_divisor > 1

    def to_dict(self) -> dict[str, int]:
        return {"batch_divisor": self.batch_divisor, "context_divisor": self.context_divisor}


_state = Backoff()


def backoff() -> Backoff:
    return _state


def reset_backoff() -> None:
    """A new stage starts at full size (its memory profile is its own)."""
    global _state
    _state = Backoff()


def shrink() -> str:
    """One step down the ladder: halve the batch while the last batch had more than one row, else the context."""
    if _state.last_batch > 1:
        _state.batch_divisor *= 2
        return f"batch ÷{_state.batch_divisor} (the last batch had {_state.last_batch} rows)"
    _state.context_divisor *= 2
    return f"context ÷{_state.context_divisor} (the last batch was one row)"


def note_batch(rows: int) -> None:
    """Memory users say how many rows they are about to run at once (what the next `shrink` halves)."""
    _state.last_batch = rows


def micro_batch(size: int) -> int:
    """`size` under the current batch divisor, at least 1."""
    return max(1, size // _state.batch_divisor)


def split_batch(size: int) -> tuple[int, int]:
    """(micro-batch, factor) with micro × factor == size and micro ≤ size ÷ divisor: a trainer that runs `factor`
    times more accumulation steps of the smaller micro-batch makes the same update."""
    target = micro_batch(size)
    micro = max(d for d in range(1, target + 1) if size % d == 0)
    return micro, size // micro


def context_limit(length: int) -> int:
    """A length limit under the current context divisor (at least 2 tokens)."""
    return max(2, length // _state.context_divisor)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError (torch.OutOfMemoryError), the CPU allocator's failure, or Python's MemoryError."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def release_cached_memory() -> None:
    """Give the CUDA caching allocator's free blocks back (cheap; nothing to do on CPU or before CUDA starts)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------------------------
# Per-step memory log

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class _Log:
    def __init__(self) -> None:
        self.path: Path | None = None
        self.handle: TextIO | None = None
        self.context: dict[str, Any] = {}


_log = _Log()


def configure_log(path: Path | None) -> None:
    """Append the per-step lines to `path` (None: stop logging). The file is opened on the first line."""
    if _log.handle is not None:
        _log.handle.close()
    _log.path, _log.handle = path, None


def set_context(**context: Any) -> None:
    """What the following lines belong to (stage, unit)."""
    _log.context = dict(context)


def resident_bytes() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def snapshot() -> dict[str, int | None]:
    """Resident memory, and CUDA's allocated / reserved / peak bytes when CUDA is in use."""
    values: dict[str, int | None] = {"rss": resident_bytes()}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        values["cuda_allocated"] = torch.cuda.memory_allocated()
        values["cuda_reserved"] = torch.cuda.memory_reserved()
        values["cuda_peak"] = torch.cuda.max_memory_allocated()
    return values


def log_step(step: int, **extra: Any) -> None:
    """One line for one optimizer step (a no-op unless a log is configured)."""
    if _log.path is None:
        return
    if _log.handle is None:
        _log.path.parent.mkdir(parents=True, exist_ok=True)
        # Kept open across steps (line-buffered: a kill loses no line); closed by configure_log.
        _log.handle = open(_log.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
    line = {"t": round(time.time(), 3), **_log.context, "step": step, **snapshot(), **_state.to_dict(), **extra}
    _log.handle.write(json.dumps(line) + "\n")
