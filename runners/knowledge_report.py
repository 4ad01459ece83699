"""The report of a knowledge run: every condition on the same questions, with paired intervals over questions.

Per question a condition's value is the mean over its self-edits and rounds (gold contained, F1, gold-answer NLL
per token, and the judge's accuracy where verdicts exist). Differences to the unadapted model and to "passage
only" are paired over the questions both answered, with bootstrap intervals, so the sign of a small effect is
reported with its uncertainty, whatever it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

from runners.config import Config
from runners.seal_report import _iteration_notes, bootstrap_ci, paired_ci
from runners.store import RunStore

METRICS = ("contains", "f1", "nll", "judge")


@dataclass
class KCondition:
    name: str
    stage: str
    per_question: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # "passage/q" → metric → values
    units: int = 0
    unusable: int = 0

    def value(self, question: str, metric: str) -> float | None:
        values = self.per_question.get(question, {}).get(metric)
        return fmean(values) if values else None

    def questions(self, metric: str) -> list[str]:
        return sorted(q for q, m in self.per_question.items() if m.get(metric))


def _add(cond: KCondition, group: str, evaluation: Mapping[str, Any]) -> None:
    for record in evaluation.get("rounds", []):
        verdicts = record.get("verdicts")
        for q, metrics in enumerate(record.get("metrics", [])):
            slot = cond.per_question.setdefault(f"{group}/q{q}", {})
            slot.setdefault("contains", []).append(metrics["contains"])
            slot.setdefault("f1", []).append(metrics["f1"])
            slot.setdefault("nll", []).append(record["nll"][q])
            if verdicts is not None and verdicts[q] is not None:
                slot.setdefault("judge", []).append(1.0 if verdicts[q] == "correct" else 0.0)


def _collect(store: RunStore, stage: str, name: str, verdict_prefix: str | None) -> KCondition | None:
    records = store.records(stage)
    if not records:
        return None
    verdicts = None
    if verdict_prefix is not None:
        from runners.deferred import imported_verdicts

        verdicts = imported_verdicts(store.root, verdict_prefix)
    cond = KCondition(name, stage)
    for unit, record in sorted(records.items()):
        cond.units += 1
        result = record.result or {}
        if record.status != "ok" or "evaluation" not in result:
            cond.unusable += 1
            continue
        group = unit.rsplit(".k", 1)[0] if stage.endswith(".inner") else unit
        evaluation = result["evaluation"]
        if verdicts is not None:
            from seal.knowledge.scoring import fill_verdicts

            unit_prefix = f"{verdict_prefix}/{unit}"
            evaluation = {**evaluation, "rounds": fill_verdicts(evaluation["rounds"], verdicts, unit_prefix)}
        _add(cond, group, evaluation)
    return cond


def collect(cfg: Config, store: RunStore) -> list[KCondition]:
    stages_dir = store.root / "stages"
    names = {p.name for p in stages_dir.iterdir()} if stages_dir.is_dir() else set()
    held_out = any(n.startswith("eval0.") for n in names)
    prefix = "eval" if held_out else "it"
    deferred = cfg.judge.spec == "deferred"
    models = sorted(int(m.group(1)) for n in names if (m := re.fullmatch(rf"{prefix}(\d+)\.inner", n)))
    out: list[KCondition] = []
    first = f"{prefix}0"
    base = _collect(store, f"{first}.base", "base model, no adaptation", first if deferred else None)
    if base:
        out.append(base)
    for stage, label in (("ctl.passage", "train on passage only"), ("ctl.repeat", "passage repeated (control)")):
        cond = _collect(store, stage, label, None)
        if cond:
            out.append(cond)
    for i in models:
        label = "passage + base-model self-edits" if i == 0 else f"passage + self-edits after RL iteration {i}"
        cond = _collect(store, f"{prefix}{i}.inner", label, f"{prefix}{i}" if deferred else None)
        if cond:
            out.append(cond)
    return out


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ci(ci: tuple[float, float] | None) -> str:
    return "n/a" if ci is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


def summary_rows(conditions: list[KCondition]) -> list[dict[str, Any]]:
    """Per condition and metric: mean over questions, bootstrap CI, and paired difference to the first condition
    (the unadapted model) and to passage-only, over the questions both have."""
    by_stage = {c.stage: c for c in conditions}
    reference = conditions[0] if conditions else None
    passage = by_stage.get("ctl.passage")
    rows = []
    for cond in conditions:
        row: dict[str, Any] = {"condition": cond.name, "stage": cond.stage, "units": cond.units}
        row["unusable"] = cond.unusable
        for metric in METRICS:
            qs = cond.questions(metric)
            values = [cond.value(q, metric) for q in qs]
            row[metric] = {
                "n": len(values),
                "mean": fmean(values) if values else None,  # type: ignore[arg-type]
                "ci": bootstrap_ci(values) if values else None,  # type: ignore[arg-type]
            }
            for other, key in ((reference, "vs_base"), (passage, "vs_passage")):
                if other is None or other is cond:
                    continue
                shared = [q for q in qs if other.value(q, metric) is not None]
                a = [cond.value(q, metric) for q in shared]
                b = [other.value(q, metric) for q in shared]
                if shared:
                    diff = fmean(x - y for x, y in zip(a, b))  # type: ignore[operator]
                    row[metric][key] = {"n": len(shared), "diff": diff, "ci": paired_ci(a, b)}  # type: ignore[arg-type]
        rows.append(row)
    return rows


def knowledge_report(cfg: Config, store: RunStore) -> str:
    conditions = collect(cfg, store)
    if not conditions:
        return "no evaluation recorded yet"
    rows = summary_rows(conditions)
    lines = [
        f"# Knowledge incorporation: {cfg.experiment} ({cfg.model.spec})",
        "",
        "Per question: mean over self-edits and rounds; intervals: 95% bootstrap over questions; Δ: paired "
        "difference to the unadapted model (NLL: lower is better).",
        "",
        "| condition | questions | contains | Δ contains | F1 | gold NLL | Δ NLL | judge |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        c, f1, nll, judge = row["contains"], row["f1"], row["nll"], row["judge"]
        d_contains = c.get("vs_base", {})
        d_nll = nll.get("vs_base", {})
        lines.append(
            f"| {row['condition']} | {c['n']} | {_fmt(c['mean'])} | "
            f"{_fmt(d_contains.get('diff'))} {_ci(d_contains.get('ci')) if d_contains else ''} | {_fmt(f1['mean'])} | "
            f"{_fmt(nll['mean'])} | {_fmt(d_nll.get('diff'))} {_ci(d_nll.get('ci')) if d_nll else ''} | "
            f"{_fmt(judge['mean']) if judge['n'] else 'not judged'} |"
        )
    notes = _iteration_notes(store)
    if notes:
        lines += ["", "Iterations:", *notes]
    return "\n".join(lines)
