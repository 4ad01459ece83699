"""Where are we running (Colab, Kaggle, local) and on what GPU; which platform profile fits.

GPU detection asks `nvidia-smi` first so that `seal doctor` and `--profile auto` stay fast and work without torch;
torch is consulted only when nvidia-smi is missing and torch is installed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class GpuInfo:
    name: str
    memory_gib: float
    bf16: bool  # compute capability ≥ 8.0 (Ampere and newer)


@dataclass(frozen=True)
class PlatformInfo:
    kind: str  # "colab", "kaggle" or "local"
    gpus: tuple[GpuInfo, ...]
    cpu_count: int

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "gpus": [asdict(g) for g in self.gpus], "cpu_count": self.cpu_count}


def detect_kind(env: dict[str, str] | None = None) -> str:
    env = dict(os.environ) if env is None else env
    if "COLAB_RELEASE_TAG" in env or "COLAB_GPU" in env:
        return "colab"
    if "KAGGLE_KERNEL_RUN_TYPE" in env or "KAGGLE_URL_BASE" in env:
        return "kaggle"
    return "local"


# GPUs without bf16 that the nvidia-smi path cannot tell apart by compute capability (older drivers lack the field).
_NO_BF16 = ("T4", "V100", "P100", "P4", "K80", "GTX", "RTX 20")


def _gpus_from_nvidia_smi() -> tuple[GpuInfo, ...] | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,compute_cap", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    gpus = []
    for line in out.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2:
            continue
        name, mem_mib = parts[0], float(parts[1])
        try:
            bf16 = float(parts[2]) >= 8.0
        except (IndexError, ValueError):
            bf16 = not any(tag in name for tag in _NO_BF16)
        gpus.append(GpuInfo(name=name, memory_gib=round(mem_mib / 1024, 1), bf16=bf16))
    return tuple(gpus)


def _gpus_from_torch() -> tuple[GpuInfo, ...]:
    if importlib.util.find_spec("torch") is None:
        return ()
    import torch

    if not torch.cuda.is_available():
        return ()
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        gpus.append(GpuInfo(props.name, round(props.total_memory / 2**30, 1), props.major >= 8))
    return tuple(gpus)


def detect_platform() -> PlatformInfo:
    gpus = _gpus_from_nvidia_smi()
    if gpus is None:
        gpus = _gpus_from_torch()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and gpus:
        keep = [int(i) for i in visible.split(",") if i.strip().isdigit()]
        gpus = tuple(gpus[i] for i in keep if i < len(gpus))
    return PlatformInfo(kind=detect_kind(), gpus=gpus, cpu_count=os.cpu_count() or 1)


def choose_profile(info: PlatformInfo) -> str:
    """Map the first visible GPU onto one of the shipped profiles (cpu, t4, kaggle, l4, a100-40, a100-80)."""
    if not info.gpus:
        return "cpu"
    gpu = info.gpus[0]
    name = gpu.name.upper()
    if info.kind == "kaggle" and not gpu.bf16:
        return "kaggle"  # T4 x2 or P100: T4 settings, with Kaggle's paths and limits noted in the profile
    if "T4" in name or not gpu.bf16:
        return "t4"  # no bf16: fp16 autocast with fp32 master weights
    if "L4" in name:
        return "l4"
    if gpu.memory_gib >= 60:
        return "a100-80"  # A100 80GB, H100, H200 …
    if gpu.memory_gib >= 30:
        return "a100-40"
    return "l4"


def default_runs_root(kind: str | None = None) -> Path:
    """Where runs go unless --run-dir says otherwise: somewhere that outlives the session when possible."""
    if os.environ.get("SEAL_RUNS"):
        return Path(os.environ["SEAL_RUNS"])
    kind = kind or detect_kind()
    if kind == "kaggle":
        return Path("/kaggle/working/seal-runs")
    if kind == "colab":
        drive = Path("/content/drive/MyDrive")
        return drive / "seal-runs" if drive.is_dir() else Path("/content/seal-runs")
    return Path("runs")


def resolve_profile(requested: str) -> str:
    return choose_profile(detect_platform()) if requested == "auto" else requested
