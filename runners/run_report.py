"""`seal report RUN_DIR`: a run's results as Markdown, PNG plots and one self-contained HTML page.

Plots (matplotlib, headless), each drawn only when the run has its data:
    conditions   the score of every condition (iterations, baselines, controls) with 95 % bootstrap intervals
    rewards      the distribution of the self-edits' rewards, per iteration
    heatmap      task × self-edit rewards, per iteration
    losses       behaviour cloning's loss per optimizer step, per iteration; the inner loops' losses per step
    memory       resident memory (and CUDA memory when there was some) over time, from logs/memory-*.jsonl
    forgetting   the continual-learning matrix (knowledge_continual)
The text is the pipeline's own summary. Everything is read from the journals, so the report can be rebuilt at any
time, also while the run goes on (`--watch`).
"""

from __future__ import annotations

import base64
import html
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from statistics import fmean
from typing import Any

from runners.config import Config, build_config
from runners.store import RunStore

ARC = ("arc_ttt", "arc_seal")
KNOWLEDGE = ("knowledge_seal", "knowledge_cpt", "knowledge_continual")


def _pyplot() -> Any:
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("MPLCONFIGDIR", str(Path(tempfile.gettempdir()) / "seal-matplotlib"))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    tmp.replace(path)
    return path


def _inner_stages(store: RunStore, prefix: str) -> list[str]:
    stages = store.root / "stages"
    found = [p.name for p in stages.glob(f"{prefix}*.inner")] if stages.is_dir() else []
    return sorted(found, key=lambda name: int(name[len(prefix) :].split(".")[0]))


def _conditions(cfg: Config, store: RunStore) -> list[tuple[str, float, tuple[float, float] | None, str]]:
    """(label, mean, 95 % CI, metric) per condition."""
    from runners.seal_report import bootstrap_ci

    if cfg.pipeline in ARC:
        from runners.seal_report import collect_conditions

        out = []
        for c in collect_conditions(cfg, store):
            values = list(c.per_task.values())
            if values:
                out.append((c.name, fmean(values), bootstrap_ci(values), "tasks solved (fraction)"))
        return out
    if cfg.pipeline in ("knowledge_seal",):
        from runners.knowledge_report import collect, summary_rows

        rows = summary_rows(collect(cfg, store))
        return [(r["condition"], r["nll"]["mean"], r["nll"]["ci"], "gold-answer NLL (lower is better)") for r in rows
                if r["nll"]["mean"] is not None]  # fmt: skip
    return []


def _rewards(store: RunStore, stage: str) -> dict[str, dict[int, float]]:
    """group → k → reward of one inner stage (rewards that exist)."""
    out: dict[str, dict[int, float]] = {}
    for unit, rec in store.records(stage).items():
        reward = (rec.result or {}).get("reward") if isinstance(rec.result, dict) else None
        if reward is None or ".k" not in unit:
            continue
        group, k = unit.rsplit(".k", 1)
        out.setdefault(group, {})[int(k)] = float(reward)
    return out


def _memory_lines(store: RunStore) -> list[dict[str, Any]]:
    lines = []
    for path in sorted((store.root / "logs").glob("memory-*.jsonl")):
        for raw in path.read_text(encoding="utf-8").splitlines():
            try:
                lines.append({**json.loads(raw), "file": path.name})
            except json.JSONDecodeError:
                continue  # a torn last line of a killed worker
    return lines


def plot_conditions(cfg: Config, store: RunStore, path: Path) -> Path | None:
    rows = _conditions(cfg, store)
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.45 * len(rows)))
    for y, (_, mean, ci, _) in enumerate(rows):
        low, high = ci if ci is not None else (mean, mean)
        ax.errorbar(mean, y, xerr=[[mean - low], [high - mean]], fmt="o", capsize=4, color="C0")
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel(f"{rows[0][3]}, mean with 95 % bootstrap interval")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def _rewards_by_stage(store: RunStore, prefix: str) -> dict[str, dict[str, dict[int, float]]]:
    """The inner stages that have rewards, in order, with them (each journal read once per plot)."""
    by_stage = {stage: _rewards(store, stage) for stage in _inner_stages(store, prefix)}
    return {stage: rewards for stage, rewards in by_stage.items() if rewards}


def plot_rewards(store: RunStore, prefix: str, path: Path) -> Path | None:
    by_stage = _rewards_by_stage(store, prefix)
    if not by_stage:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for stage, rewards in by_stage.items():
        values = [v for ks in rewards.values() for v in ks.values()]
        ax.hist(values, bins=min(20, max(5, len(values))), alpha=0.6, label=f"{stage} ({len(values)} self-edits)")
    ax.set_xlabel("reward")
    ax.set_ylabel("self-edits")
    ax.legend()
    return _save(fig, path)


def plot_heatmap(store: RunStore, prefix: str, path: Path) -> Path | None:
    by_stage = _rewards_by_stage(store, prefix)
    if not by_stage:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(by_stage), figsize=(3.5 * len(by_stage) + 1, 4), squeeze=False)
    for ax, (stage, rewards) in zip(axes[0], by_stage.items()):
        groups = sorted(rewards)
        ks = sorted({k for g in rewards.values() for k in g})
        grid = [[rewards[g].get(k, float("nan")) for k in ks] for g in groups]
        image = ax.imshow(grid, aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(ks)), [f"k{k}" for k in ks])
        ax.set_yticks(range(len(groups)), groups)
        ax.set_title(stage)
        fig.colorbar(image, ax=ax, label="reward")
    return _save(fig, path)


def plot_losses(store: RunStore, memory: list[dict[str, Any]], path: Path) -> Path | None:
    sft = {}
    stages = store.root / "stages"
    for stage_dir in sorted(stages.glob("*.sft")) if stages.is_dir() else []:
        for rec in store.records(stage_dir.name).values():
            losses = (rec.result or {}).get("losses") if isinstance(rec.result, dict) else None
            if losses:
                sft[stage_dir.name] = losses
    inner: dict[str, list[float]] = {}
    for line in memory:
        if "loss" in line and line.get("unit"):
            inner.setdefault(f"{line.get('stage')}/{line['unit']}", []).append(float(line["loss"]))
    if not sft and not inner:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, losses in sft.items():
        axes[0].plot(range(1, len(losses) + 1), losses, marker="o", label=name)
    axes[0].set_title("behaviour cloning (SFT)")
    for losses in list(inner.values())[:40]:  # a readable number of curves
        axes[1].plot(range(1, len(losses) + 1), losses, alpha=0.5, linewidth=1)
    axes[1].set_title(f"inner loops ({len(inner)} units, from the memory log)")
    for ax in axes:
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
    if sft:
        axes[0].legend()
    return _save(fig, path)


def _process_label(file: str, lines: list[dict[str, Any]]) -> str:
    """A legend label for one memory log: `logs/memory-<pid>.jsonl` → "process 327 (it0.inner, it1.inner)"."""
    pid = file.removeprefix("memory-").removesuffix(".jsonl")
    stages = list(dict.fromkeys(str(line["stage"]) for line in lines if line.get("stage")))
    shown = ", ".join(stages[:2]) + (f" +{len(stages) - 2} more" if len(stages) > 2 else "")
    return f"process {pid}" + (f" ({shown})" if shown else "")


def plot_memory(memory: list[dict[str, Any]], path: Path) -> Path | None:
    if not memory:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    start = min(line["t"] for line in memory)
    for file in sorted({line["file"] for line in memory}):
        mine = [line for line in memory if line["file"] == file]
        name = _process_label(file, mine)
        ax.plot([line["t"] - start for line in mine], [(line.get("rss") or 0) / 2**30 for line in mine], label=name)
        cuda = [line for line in mine if line.get("cuda_peak")]
        if cuda:
            ax.plot([c["t"] - start for c in cuda], [c["cuda_peak"] / 2**30 for c in cuda], "--", label=f"{name} CUDA")
    ax.set_xlabel("seconds since the first logged step")
    ax.set_ylabel("GiB (resident)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_forgetting(cfg: Config, store: RunStore, path: Path) -> Path | None:
    if cfg.pipeline != "knowledge_continual":
        return None
    from runners.pipelines.knowledge_continual import forgetting_matrix, write_heatmap

    matrix = forgetting_matrix(cfg, store)
    return write_heatmap(matrix, path) if matrix.get("sequences") else None


def _summary(cfg: Config, store: RunStore) -> str:
    from runners.pipelines import get_pipeline

    pipeline = get_pipeline(cfg.pipeline)
    try:
        text = pipeline.summarize(cfg, store)
    except Exception as exc:  # a run too early for its summary still gets its plots
        return f"(no summary yet: {type(exc).__name__}: {exc})"
    # A summary ends with "report: PATH" for the terminal (where the pipeline wrote its own file); inside the
    # report that line only points elsewhere.
    lines = text.splitlines()
    while lines and lines[-1].startswith("report: "):
        lines.pop()
    return "\n".join(lines)


def build_report(run_dir: str | Path, out: Path | None = None) -> dict[str, Any]:
    """Write report.md, report.html and the PNGs into `out` (default RUN_DIR/report/); return what was written."""
    store = RunStore.open_existing(run_dir)
    manifest = store.read_manifest()
    assert manifest is not None  # open_existing checked that it is there
    cfg = build_config(manifest["config"])
    folder = Path(out) if out is not None else store.root / "report"
    folder.mkdir(parents=True, exist_ok=True)
    prefix = "it"
    memory = _memory_lines(store)
    makers: list[tuple[str, str, Callable[[Path], Path | None]]] = [
        ("Conditions", "conditions.png", lambda p: plot_conditions(cfg, store, p)),
        ("Self-edit rewards", "rewards.png", lambda p: plot_rewards(store, prefix, p)),
        ("Task × self-edit rewards", "heatmap.png", lambda p: plot_heatmap(store, prefix, p)),
        ("Losses", "losses.png", lambda p: plot_losses(store, memory, p)),
        ("Memory over time", "memory.png", lambda p: plot_memory(memory, p)),
        ("Forgetting (continual self-edits)", "forgetting.png", lambda p: plot_forgetting(cfg, store, p)),
    ]
    figures = [(title, made) for title, name, make in makers if (made := make(folder / name)) is not None]
    summary = _summary(cfg, store)
    title = f"{cfg.experiment} — {cfg.pipeline}, {cfg.model.spec}, profile {cfg.profile}"
    markdown = [f"# {title}", "", summary, ""]
    for heading, path in figures:
        markdown += [f"## {heading}", "", f"![{heading}]({path.name})", ""]
    (folder / "report.md").write_text("\n".join(markdown), encoding="utf-8")
    page = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}img{max-width:100%}"
        "pre{white-space:pre-wrap;background:#f6f6f6;padding:1em}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<pre>{html.escape(summary)}</pre>",
    ]
    for heading, path in figures:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        page += [
            f"<h2>{html.escape(heading)}</h2>",
            f"<img alt='{html.escape(heading)}' src='data:image/png;base64,{data}'>",
        ]
    page.append("</body></html>")
    (folder / "report.html").write_text("\n".join(page), encoding="utf-8")
    return {
        "folder": str(folder),
        "figures": [p.name for _, p in figures],
        "markdown": "report.md",
        "html": "report.html",
    }
