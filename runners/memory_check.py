"""The memory plan of an experiment: each phase its pipeline runs, its predicted peak, the budget, and, when it does
not fit, the smallest change that does. `seal plan` prints it; every command that runs a pipeline checks it before
the run directory gets its manifest (`run.memory_check: false` skips the check)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runners.config import Config
from ttt import cpu_features
from ttt.memory_plan import GIB, ModelShape, Terms, generation_peak, gib, shape_of, training_peak

KNOWLEDGE_PROMPT_TOKENS = 1024  # a SQuAD passage and the self-edit prompt stay under this
GPU_PROFILES_GIB = {"t4": 15.0, "kaggle": 15.0, "l4": 22.0, "a100-40": 40.0, "a100-80": 80.0}
DEFAULT_GPU_GIB = 15.0  # a GPU profile of the user's own on a machine without one: plan for a T4
NO_BF16_PROFILES = ("t4", "kaggle")  # Turing GPUs (compute capability 7.5)
ARC = ("arc_ttt", "arc_seal")
KNOWLEDGE = ("knowledge_seal", "knowledge_cpt", "knowledge_continual")


@dataclass(frozen=True)
class MemoryPlan:
    phases: list[Terms]
    budget: int
    budget_source: str
    device: str
    advice: str | None  # the change that makes the worst phase fit (None when everything fits)
    model: str = ""
    profile: str = ""
    dtype: str = ""
    notes: tuple[str, ...] = ()  # things to know that do not change whether it fits

    @property
    def worst(self) -> Terms:
        return max(self.phases, key=lambda t: t.total)

    @property
    def fits(self) -> bool:
        return all(t.total <= self.budget for t in self.phases)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "profile": self.profile,
            "dtype": self.dtype,
            "fits": self.fits,
            "budget": self.budget,
            "budget_source": self.budget_source,
            "device": self.device,
            "phases": [t.to_dict() for t in self.phases],
            "advice": self.advice,
            "notes": list(self.notes),
        }


def _device(cfg: Config) -> str:
    if cfg.profile in GPU_PROFILES_GIB:
        return "cuda"
    if cfg.profile == "cpu":
        return "cpu"
    return "cpu" if cfg.train.dtype in ("fp32", "auto") else "cuda"  # a profile file of the user's own


def _dtype(cfg: Config, device: str) -> str:
    if cfg.train.dtype != "auto":
        return cfg.train.dtype
    # what the workers resolve `auto` to: bf16 on a CPU with bf16 matrix hardware (ttt/cpu_features.py, which
    # honours SEAL_CPU_BF16), else fp32; bf16 on a GPU
    return cpu_features.auto_dtype() if device == "cpu" else "bf16"


def _meminfo_kib(key: str) -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            return int(next(line for line in meminfo if line.startswith(f"{key}:")).split()[1])
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def local_gpu_gib() -> float | None:
    """The memory of this machine's first NVIDIA GPU, from nvidia-smi (no torch: `seal plan` runs anywhere)."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return int(done.stdout.split()[0]) / 1024  # MiB
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def _budget(cfg: Config, device: str) -> tuple[int, str]:
    if cfg.run.memory_budget_gib is not None:
        return int(cfg.run.memory_budget_gib * GIB), "run.memory_budget_gib"
    if device == "cuda":
        if cfg.profile in GPU_PROFILES_GIB:
            return int(GPU_PROFILES_GIB[cfg.profile] * GIB), f"the {cfg.profile} profile's GPU"
        # a profile of the user's own: the GPU of this machine when it has one, else a T4's, said so
        found = local_gpu_gib()
        if found is not None:
            return int(found * GIB), "this machine's GPU"
        return int(DEFAULT_GPU_GIB * GIB), (
            f"assumed for the {cfg.profile} profile: no GPU here; set run.memory_budget_gib to its GPU's memory"
        )
    total_kib = _meminfo_kib("MemTotal")
    if total_kib is None:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")), "this machine's memory"
    available_kib = _meminfo_kib("MemAvailable")
    now = f", {available_kib / 2**20:.1f} GiB available now" if available_kib is not None else ""
    return total_kib * 1024, f"this machine's memory{now}"


def _notes(cfg: Config, device: str, dtype: str) -> tuple[str, ...]:
    notes = []
    if cfg.profile in NO_BF16_PROFILES and dtype == "bf16":
        notes.append(
            f"the {cfg.profile} profile's GPU (a T4) has no bf16 hardware: bf16 runs emulated, several times slower; "
            "train.dtype=fp16 is the profile's setting"
        )
    if device == "cpu" and dtype == "bf16":
        notes.append("bf16 on this CPU: weights at 2 bytes, activations and KV cache in fp32 (the fp32 LoRA sums)")
    return tuple(notes)


def phases(cfg: Config, shape: ModelShape, device: str) -> list[Terms]:
    """The memory-heavy phases of the pipeline `cfg` runs, at the sizes its config allows at most."""
    dtype = _dtype(cfg, device)
    packed = cfg.train.packing == "packed" or (cfg.train.packing == "auto" and device == "cuda")
    out: list[Terms] = []
    lora = shape.lora_parameters(cfg.lora.rank, cfg.lora.targets)
    if cfg.pipeline in ARC:
        length = min(cfg.train.max_len, cfg.ttt_data.max_tokens)
        tokens = length * (cfg.train.batch_size if packed else 1)
        out.append(_train(cfg, shape, tokens, cfg.lora.rank, cfg.lora.targets, dtype, device, "inner-loop training"))
        views = generation_peak(
            shape,
            rows=cfg.infer.batch_size,
            prompt_tokens=cfg.infer.max_tokens,
            new_tokens=cfg.infer.max_new_tokens,
            dtype=dtype,
            device=device,
            lora=lora,
        )
        out.append(dataclasses.replace(views, phase="augmented inference"))
    if cfg.pipeline in KNOWLEDGE:
        tokens = cfg.train.max_len * (cfg.knowledge.train.batch_size if packed else 1)
        targets = cfg.knowledge.lora.targets
        out.append(_train(cfg, shape, tokens, cfg.knowledge.lora.rank, targets, dtype, device, "passage update"))
    if cfg.pipeline in ("arc_seal", *KNOWLEDGE):
        prompt = cfg.infer.max_tokens if cfg.pipeline in ARC else KNOWLEDGE_PROMPT_TOKENS
        sampled = generation_peak(
            shape,
            rows=min(cfg.infer.batch_size, cfg.seal.self_edits),
            prompt_tokens=prompt,
            new_tokens=cfg.seal.max_new_tokens,
            dtype=dtype,
            device=device,
        )
        out.append(dataclasses.replace(sampled, phase="self-edit sampling"))
    if cfg.pipeline in ("arc_seal", "knowledge_seal"):
        r = cfg.restem
        tokens = r.max_len * r.batch_size  # TRL pads a batch to its longest row
        sft = _train(cfg, shape, tokens, r.lora.rank, r.lora.targets, dtype, device, "behaviour cloning (SFT)", True)
        out.append(sft)
    return out


def _train(
    cfg: Config,
    shape: ModelShape,
    tokens: int,
    rank: int,
    targets: tuple[str, ...],
    dtype: str,
    device: str,
    name: str,
    tiled_logits: bool = False,
) -> Terms:
    terms = training_peak(
        shape,
        tokens=tokens,
        loss_tokens=tokens,  # an upper bound: the loss may cover fewer tokens than the sequence
        rank=rank,
        targets=targets,
        dtype=dtype,
        grad_checkpointing=cfg.train.grad_checkpointing,
        device=device,
        tiled_logits=tiled_logits,
    )
    return dataclasses.replace(terms, phase=name)


# Changes tried, in order, when the plan does not fit: each (key, new value) applied to the config on its own.
def _candidates(cfg: Config, one_step: bool = False) -> list[tuple[str, Any]]:
    """Each key's smaller values (halvings, down to 256 tokens or 1 row); with `one_step`, only the first halving."""
    found: list[tuple[str, Any]] = []
    if not cfg.train.grad_checkpointing:
        found.append(("train.grad_checkpointing", True))
    for key, value in (
        ("train.max_len", cfg.train.max_len),
        ("ttt_data.max_tokens", cfg.ttt_data.max_tokens),
        ("infer.max_tokens", cfg.infer.max_tokens),
        ("infer.batch_size", cfg.infer.batch_size),
        ("train.batch_size", cfg.train.batch_size),
        ("restem.max_len", cfg.restem.max_len),
        ("restem.batch_size", cfg.restem.batch_size),
        ("seal.max_new_tokens", cfg.seal.max_new_tokens),
    ):
        smaller = value // 2
        while smaller >= (256 if "len" in key or "tokens" in key else 1):
            found.append((key, smaller))
            smaller //= 2
            if one_step:
                break
    return found


def _with(cfg: Config, key: str, value: Any) -> Config:
    section, name = key.split(".")
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **{name: value})})


def model_folder(spec: str, cache_dir: str | None = None) -> str | None:
    """A folder holding the model's config.json, found without building or downloading anything (None: not here)."""
    from ttt.models import builtin_folder

    folder = builtin_folder(spec, cache_dir)
    if folder is not None:
        return str(folder) if folder.is_dir() else None
    if Path(spec).expanduser().is_dir():
        return str(Path(spec).expanduser())
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(spec, "config.json")
    except Exception:  # not installed, or not a repo id: not here
        return None
    return str(Path(found).parent) if isinstance(found, str) else None


def plan(cfg: Config, model_folder_path: str | None = None) -> MemoryPlan | None:
    """None for pipelines that load no model (selftest). Raises ValueError when the model's shape is unknown."""
    if cfg.pipeline not in (*ARC, *KNOWLEDGE):
        return None
    folder = model_folder_path or model_folder(cfg.model.spec, cfg.model.cache_dir)
    from ttt.models import builtin_folder

    if (
        folder is None
        and builtin_folder(cfg.model.spec, cfg.model.cache_dir) is not None
        and cfg.model.spec != "smollm2-135m"
    ):
        raise ValueError(f"model.spec {cfg.model.spec!r} is built on first use: nothing to plan before (it is tiny)")
    spec = cfg.model.spec
    if folder is None and spec.startswith(("/", "./", "../", "~")) and not Path(spec).expanduser().exists():
        raise ValueError(f"model.spec {spec!r}: no such folder; name a model folder or a hub id")
    shape = shape_of(spec, folder)
    device = _device(cfg)
    budget, source = _budget(cfg, device)
    found = phases(cfg, shape, device)
    advice = None if all(t.total <= budget for t in found) else _advice(cfg, shape, device, budget)
    dtype = _dtype(cfg, device)
    return MemoryPlan(found, budget, source, device, advice, spec, cfg.profile, dtype, _notes(cfg, device, dtype))


def _peak(cfg: Config, shape: ModelShape, device: str) -> int:
    return max(t.total for t in phases(cfg, shape, device))


def _advice(cfg: Config, shape: ModelShape, device: str, budget: int) -> str:
    """The first single change that fits; else changes added greedily (each the one that lowers the peak most)."""
    for key, value in _candidates(cfg):
        peak = _peak(_with(cfg, key, value), shape, device)
        if peak <= budget:
            return f"set {key}={str(value).lower()} (peak {gib(peak)})"
    changes: dict[str, Any] = {}
    current = cfg
    while _peak(current, shape, device) > budget:
        options = _candidates(current, one_step=True)
        if not options:
            break
        key, value = min(options, key=lambda kv: _peak(_with(current, *kv), shape, device))
        if _peak(_with(current, key, value), shape, device) >= _peak(current, shape, device):
            break
        current, changes[key] = _with(current, key, value), value
    sets = " ".join(f"--set {k}={str(v).lower()}" for k, v in changes.items())
    peak = _peak(current, shape, device)
    if peak <= budget:
        return f"{sets} (peak {gib(peak)})"
    bigger = "a bigger GPU" if device == "cuda" else "a machine with more memory"
    if not changes:
        return f"no smaller setting lowers the peak of {gib(peak)}: {bigger} or a smaller model"
    return f"even {sets} leaves a peak of {gib(peak)}: {bigger} or a smaller model"


def describe(result: MemoryPlan) -> str:
    lines = [f"memory budget: {gib(result.budget)} ({result.budget_source}; {result.device}, {result.dtype})"]
    for terms in result.phases:
        parts = ", ".join(f"{name} {gib(value)}" for name, value in terms.terms.items())
        mark = "fits" if terms.total <= result.budget else "DOES NOT FIT"
        lines.append(f"  {terms.phase}: {gib(terms.total)} — {mark} ({parts})")
    if result.advice:
        lines.append(f"to fit: {result.advice}")
    lines.extend(f"note: {note}" for note in result.notes)
    return "\n".join(lines)


def refusal(result: MemoryPlan) -> str:
    worst = result.worst
    return (
        f"the memory plan does not fit: {worst.phase} needs {gib(worst.total)} of {gib(result.budget)} "
        f"({result.budget_source}); {result.advice}. `seal plan` shows every term; run.memory_check=false skips "
        "this check"
    )


def check_before_start(cfg: Config) -> str | None:
    """The refusal message when `cfg`'s plan does not fit (None: it fits, the check is off, or the model's shape is
    not known here, in which case loading the model is the check)."""
    if not cfg.run.memory_check:
        return None
    try:
        result = plan(cfg)
    except ValueError:
        return None
    return None if result is None or result.fits else refusal(result)
