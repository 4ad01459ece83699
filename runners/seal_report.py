"""The report of a SEAL run: every condition on the same tasks, with bootstrap intervals over tasks.

A pilot with SmolLM2-135M found that two of three "TTT solves" were format learning and output priors, caught only
by controls; so the table puts the self-edit conditions beside in-context, oracle TTT and wrong-task TTT, and counts
task-specific solves: tasks solved by own-task TTT and by none of the controls that saw no task-specific training.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runners.config import Config
from runners.store import RunStore

BOOTSTRAP_RESAMPLES = 2000


def bootstrap_ci(values: Sequence[float], *, seed: int = 0, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean, resampling tasks; None for fewer than two values."""
    if len(values) < 2:
        return None
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(BOOTSTRAP_RESAMPLES))
    lo = means[int((1 - level) / 2 * BOOTSTRAP_RESAMPLES)]
    hi = means[min(BOOTSTRAP_RESAMPLES - 1, int((1 + level) / 2 * BOOTSTRAP_RESAMPLES))]
    return lo, hi


def paired_ci(a: Sequence[float], b: Sequence[float], *, seed: int = 0) -> tuple[float, float] | None:
    """Bootstrap interval of mean(a - b) over the same tasks (paired)."""
    return bootstrap_ci([x - y for x, y in zip(a, b)], seed=seed)


@dataclass
class Condition:
    name: str
    stage: str
    per_task: dict[str, float]  # task → fraction of its self-edits (or its one run) that solved it
    pairs: int = 0  # (task, k) pairs scored, for self-edit conditions
    pairs_solved: int = 0
    pairs_usable: int = 0  # applied as written (not rejected, not over the step cap)

    @property
    def any_solved(self) -> set[str]:
        return {t for t, v in self.per_task.items() if v > 0}


def _single(store: RunStore, stage: str, name: str) -> Condition | None:
    records = store.records(stage)
    if not records:
        return None
    per_task = {}
    for unit, rec in records.items():
        if rec.status == "ok" and rec.result.get("reward") is not None:
            per_task[unit] = float(rec.result["reward"])
    return Condition(name, stage, per_task)


def _self_edits(store: RunStore, stage: str, name: str) -> Condition | None:
    records = store.records(stage)
    if not records:
        return None
    solved: dict[str, list[float]] = {}
    for unit, rec in records.items():
        task = unit.rsplit(".k", 1)[0]
        reward = (rec.result or {}).get("reward")
        if rec.status in ("ok", "invalid") and reward is not None:
            solved.setdefault(task, []).append(float(reward))  # an invalid self-edit is an unsolved pair
    cond = Condition(name, stage, {t: sum(v) / len(v) for t, v in solved.items()})
    cond.pairs = sum(len(v) for v in solved.values())
    cond.pairs_usable = sum(1 for r in records.values() if r.status == "ok" and not (r.result or {}).get("zero_epochs"))
    cond.pairs_solved = int(sum(sum(v) for v in solved.values()))
    return cond


def _fmt(ci: tuple[float, float] | None) -> str:
    return "n/a" if ci is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def collect_conditions(cfg: Config, store: RunStore) -> list[Condition]:
    conditions: list[Condition] = []
    base = _single(store, "it0.base", "in-context (no adapter)")
    if base:
        conditions.append(base)
    iterations = sorted(
        int(m.group(1))
        for p in (store.root / "stages").glob("it*.inner")
        if (m := re.fullmatch(r"it(\d+)\.inner", p.name))
    )
    for i in iterations:
        label = "iteration-0 self-edits (base model)" if i == 0 else f"self-edits after RL iteration {i}"
        cond = _self_edits(store, f"it{i}.inner", label)
        if cond:
            conditions.append(cond)
    controls = (
        ("ctl.format", "in-context, decoding constrained to grids"),
        ("ctl.oracle", "oracle TTT (fixed recipe)"),
        ("ctl.wrong_task", "wrong-task TTT (control)"),
    )
    for stage, label in controls:
        cond = _single(store, stage, label)
        if cond:
            conditions.append(cond)
    return conditions


def _iteration_notes(store: RunStore) -> list[str]:
    notes = []
    for path in sorted((store.root / "stages").glob("it*.sft")):
        rec = store.records(path.name).get("sft")
        if rec is None:
            continue
        i = path.name.split(".")[0]
        if rec.result.get("carried_forward"):
            notes.append(f"- {i}: {rec.result.get('reason')}")
        else:
            losses = rec.result.get("losses") or [None]
            notes.append(
                f"- {i}: behaviour-cloned on {rec.result.get('rows_used')} self-edits, {rec.result.get('steps')} steps,"
                f" loss {losses[0]:.3f} → {losses[-1]:.3f}"
                + (" (resumed mid-training)" if rec.result.get("resumed_from_step") else "")
            )
    return notes


def arc_seal_report(cfg: Config, store: RunStore) -> str:
    conditions = collect_conditions(cfg, store)
    tasks = sorted(set().union(*(c.per_task for c in conditions))) if conditions else []
    base = conditions[0] if conditions and conditions[0].stage == "it0.base" else None
    rows = [
        "| condition | stage | tasks | self-edits usable | pairs solved (paper metric) | tasks solved (any) |"
        " mean per task, 95% CI | Δ vs in-context, paired 95% CI |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cond in conditions:
        common = [t for t in tasks if t in cond.per_task]
        values = [cond.per_task[t] for t in common]
        mean = sum(values) / len(values) if values else float("nan")
        pairs = f"{cond.pairs_solved}/{cond.pairs} = {cond.pairs_solved / cond.pairs:.2f}" if cond.pairs else "—"
        usable = f"{cond.pairs_usable}/{cond.pairs}" if cond.pairs else "—"
        delta = "—"
        if base is not None and cond is not base:
            paired = [t for t in common if t in base.per_task]
            ours, theirs = [cond.per_task[t] for t in paired], [base.per_task[t] for t in paired]
            if paired:
                mean_diff = (sum(ours) - sum(theirs)) / len(paired)
                delta = f"{mean_diff:+.2f} {_fmt(paired_ci(ours, theirs, seed=cfg.run.seed))}"
        rows.append(
            f"| {cond.name} | {cond.stage} | {len(common)} | {usable} | {pairs} | "
            f"{len(cond.any_solved)}/{len(common)} | "
            f"{mean:.2f} {_fmt(bootstrap_ci(values, seed=cfg.run.seed))} | {delta} |"
        )
    own = (
        set().union(*(c.any_solved for c in conditions if c.stage.endswith(".inner") or c.stage == "ctl.oracle"))
        if conditions
        else set()
    )
    controls = (
        set().union(*(c.any_solved for c in conditions if c.stage in ("it0.base", "ctl.format", "ctl.wrong_task")))
        if conditions
        else set()
    )
    specific = sorted(own - controls)
    lines = [
        f"SEAL on ARC — {cfg.model.spec}, profile {cfg.profile}, seed {cfg.run.seed}, "
        f"{cfg.seal.self_edits} self-edits per task, {len(tasks)} tasks",
        "",
        *rows,
        "",
        f"task-specific solves (own-task TTT; not in-context, format-matched or wrong-task): {len(specific)}"
        + (f" — {', '.join(specific)}" if specific else ""),
        *_iteration_notes(store),
    ]
    return "\n".join(lines)


def report_data(cfg: Config, store: RunStore) -> dict[str, Any]:
    """The same numbers as JSON (for the reproduction script that pools seeds)."""
    return {
        c.stage: {
            "name": c.name,
            "per_task": c.per_task,
            "pairs": c.pairs,
            "pairs_solved": c.pairs_solved,
            "pairs_usable": c.pairs_usable,
        }
        for c in collect_conditions(cfg, store)
    }
