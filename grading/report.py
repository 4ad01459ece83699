"""Verdict file and report, both rebuilt from the cache's run tables (so a killed run still has them).

``verdicts.jsonl``: one line per item with its deterministic metrics, each judge's verdict (status, reason,
raw reply), the variance re-judge, the panel verdict and any labels from the input. ``report.json`` /
``report.md``: accuracy by group, metric and judge with unscored / truncated / disagree rates; judge against
deterministic metric (confusion, agreement, Cohen's kappa); Fleiss' kappa across judges; judge against input
labels (agreement, kappa, sensitivity, specificity, Rogan-Gladen corrected accuracy with a 95% interval);
judge variance; throughput.
"""

from __future__ import annotations

import json
import os
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from grading.agreement import Confusion, cohen_kappa, fleiss_kappa, percent_agreement, rogan_gladen
from grading.cache import JudgementCache
from grading.metrics import ARC_PASS_K, summarize_metrics, tasks_solved
from grading.rubrics import CORRECT

SCORED = ("scored", "rule")
DISAGREE, UNSCORED = "disagree", "unscored"
QA_METRICS = ("em", "f1", "contains")
OVERALL = "(overall)"


def _vote_record(row: Mapping[str, Any]) -> dict[str, Any]:
    if row["key"] is None:
        return {
            "status": "rule",
            "verdict": row["rule_verdict"],
            "reason": "empty answer: decided without a call",
        }
    if row["status"] is not None:
        replies = json.loads(row["replies"])
        record = {
            "status": row["status"],
            "verdict": row["verdict"],
            "reason": row["reason"],
            "raw": replies[-1]["text"] if replies else None,
            "attempts": row["attempts"],
            "key": row["key"],
        }
        return record
    if row["failure"] is not None:
        return {"status": "failed", "verdict": None, "reason": row["failure"], "key": row["key"]}
    return {
        "status": "pending",
        "verdict": None,
        "reason": "not graded yet (the run was interrupted)",
        "key": row["key"],
    }


def panel_verdict(votes: Sequence[dict[str, Any]]) -> str:
    """Strict majority of the panel decides; a split of complete votes is ``disagree``; else ``unscored``."""
    counts = Counter(v["verdict"] for v in votes if v["status"] in SCORED)
    if counts:
        label, top = counts.most_common(1)[0]
        if 2 * top > len(votes):
            return label
    return UNSCORED if any(v["status"] not in SCORED for v in votes) else DISAGREE


def rebuild_verdicts(cache: JudgementCache) -> list[dict[str, Any]]:
    judges = [j["name"] for j in cache.meta().get("judges", [])]
    votes: dict[str, dict[int, dict[str, dict[str, Any]]]] = {}
    for row in cache.run_votes():
        votes.setdefault(row["item_id"], {}).setdefault(row["vote"], {})[row["judge"]] = _vote_record(row)
    records = []
    for item_id, item, metrics in cache.run_items():
        record: dict[str, Any] = {
            "item_id": item_id,
            "kind": item["kind"],
            "group": item.get("group", "default"),
            "metrics": metrics,
        }
        if item["kind"] == "arc":
            record["task_id"] = item.get("task_id", item_id)
        item_votes = votes.get(item_id, {})
        if judges and item["kind"] == "qa":
            main = item_votes.get(0, {})
            record["judges"] = {name: main[name] for name in judges if name in main}
            record["panel"] = panel_verdict(list(record["judges"].values()))
            if 1 in item_votes:
                record["variance"] = item_votes[1]
        if item.get("labels"):
            record["labels"] = item["labels"]
        record["provenance"] = item.get("provenance", {})
        records.append(record)
    return records


# ---------------------------------------------------------------------------------------------- report


def _rate(count: int, total: int) -> float | None:
    return count / total if total else None


def _judge_summary(records: Sequence[dict[str, Any]], name: str) -> dict[str, Any]:
    votes = [r["judges"][name] for r in records if name in r.get("judges", {})]
    statuses = Counter(v["status"] for v in votes)
    verdicts = Counter(v["verdict"] for v in votes if v["status"] in SCORED)
    scored = sum(verdicts.values())
    return {
        "n": len(votes),
        "scored": scored,
        "accuracy": _rate(verdicts[CORRECT], scored),
        "verdicts": dict(verdicts),
        "unscored_rate": _rate(len(votes) - scored, len(votes)),
        "truncated_rate": _rate(statuses["truncated"], len(votes)),
        "unparseable_rate": _rate(statuses["unparseable"], len(votes)),
        "failed_rate": _rate(statuses["failed"] + statuses["pending"], len(votes)),
    }


def _group_summary(records: Sequence[dict[str, Any]], judges: Sequence[str]) -> dict[str, Any]:
    qa = [r for r in records if r["kind"] == "qa"]
    arc = [r for r in records if r["kind"] == "arc"]
    summary: dict[str, Any] = {"n": len(records)}
    if qa:
        summary["qa"] = {"n": len(qa), "metrics": summarize_metrics(r["metrics"] for r in qa)}
        if judges:
            summary["qa"]["judges"] = {name: _judge_summary(qa, name) for name in judges}
            panel = Counter(r["panel"] for r in qa)
            decided = len(qa) - panel[DISAGREE] - panel[UNSCORED]
            summary["qa"]["panel"] = {
                "accuracy": _rate(panel[CORRECT], decided),
                "verdicts": dict(panel),
                "disagree_rate": _rate(panel[DISAGREE], len(qa)),
                "unscored_rate": _rate(panel[UNSCORED], len(qa)),
            }
    if arc:
        solved = tasks_solved((r["task_id"], r["metrics"][f"pass@{ARC_PASS_K}"] == 1.0) for r in arc)
        metrics = summarize_metrics(r["metrics"] for r in arc)
        unparseable = sum(r["metrics"]["unparseable_attempts"] for r in arc)
        summary["arc"] = {
            "n": len(arc),
            "pass@1": metrics["pass@1"],
            f"pass@{ARC_PASS_K}": metrics[f"pass@{ARC_PASS_K}"],
            "tasks": len(solved),
            "tasks_solved": sum(solved.values()),
            "task_accuracy": _rate(sum(solved.values()), len(solved)),
            "attempts": int(sum(r["metrics"]["attempts"] for r in arc)),
            "unparseable_attempts": int(unparseable),
        }
    return summary


def _binary(verdict: str | None) -> bool:
    return verdict == CORRECT


def _judge_vs_metric(qa: Sequence[dict[str, Any]], name: str) -> dict[str, Any]:
    scored = [r for r in qa if r.get("judges", {}).get(name, {}).get("status") in SCORED]
    result = {}
    for metric in ("em", "contains"):
        judge = [_binary(r["judges"][name]["verdict"]) for r in scored]
        reference = [r["metrics"][metric] == 1.0 for r in scored]
        result[metric] = {
            "n": len(scored),
            "confusion": Confusion.of(judge, reference).as_matrix(),
            "agreement": percent_agreement(judge, reference),
            "kappa": cohen_kappa(judge, reference),
        }
    return result


def _judge_vs_labels(qa: Sequence[dict[str, Any]], name: str, label: str) -> dict[str, Any]:
    """Calibrate the judge on the labelled items; correct its apparent accuracy in each group with it.

    Sensitivity and specificity come from the items that carry the label (the calibration set); the corrected
    accuracy is then computed per group from the judge's apparent accuracy over all scored items of that group,
    so unlabelled outputs graded alongside labelled ones get an estimate on the labels' scale.
    """
    scored = [r for r in qa if r.get("judges", {}).get(name, {}).get("status") in SCORED]
    labelled = [r for r in scored if label in r.get("labels", {})]
    judge = [_binary(r["judges"][name]["verdict"]) for r in labelled]
    reference = [r["labels"][label] for r in labelled]
    confusion = Confusion.of(judge, reference)
    result: dict[str, Any] = {
        "n": len(labelled),
        "confusion": confusion.as_matrix(),
        "agreement": percent_agreement(judge, reference),
        "kappa": cohen_kappa(judge, reference),
        "sensitivity": confusion.sensitivity,
        "specificity": confusion.specificity,
        "label_accuracy": _rate(sum(reference), len(reference)),
        "by_group": {},
    }
    groups: dict[str, list[dict[str, Any]]] = {OVERALL: scored}
    for record in scored:
        groups.setdefault(record["group"], []).append(record)
    for group, members in groups.items():
        observed = _rate(sum(_binary(r["judges"][name]["verdict"]) for r in members), len(members))
        entry: dict[str, Any] = {"n": len(members), "judge_accuracy": observed, "corrected_accuracy": None}
        if observed is not None and confusion.sensitivity is not None and confusion.specificity is not None:
            corrected = rogan_gladen(
                observed,
                len(members),
                confusion.sensitivity,
                confusion.tp + confusion.fn,
                confusion.specificity,
                confusion.tn + confusion.fp,
            )
            if corrected is not None:
                entry["corrected_accuracy"] = {
                    "estimate": corrected.estimate,
                    "raw": corrected.raw,
                    "ci95": [corrected.low, corrected.high],
                }
        result["by_group"][group] = entry
    return result


def _variance(qa: Sequence[dict[str, Any]], name: str) -> dict[str, Any]:
    pairs = [
        (r["judges"][name], r["variance"][name])
        for r in qa
        if name in r.get("variance", {}) and name in r.get("judges", {})
    ]
    both = [(a["verdict"], b["verdict"]) for a, b in pairs if a["status"] == "scored" and b["status"] == "scored"]
    flips = sum(a != b for a, b in both)
    return {
        "sampled": len(pairs),
        "compared": len(both),
        "flips": flips,
        "flip_rate": _rate(flips, len(both)),
    }


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _throughput(cache: JudgementCache, meta: Mapping[str, Any]) -> dict[str, Any]:
    rows = cache.run_counters()
    latencies = sorted(row["latency_s"] / max(1, row["attempts"]) for row in rows if row["latency_s"] is not None)

    def rate(count: str, duration: str) -> float | None:
        tokens = sum(row[count] or 0 for row in rows)
        nanos = sum(row[duration] or 0 for row in rows)
        return tokens / (nanos / 1e9) if nanos else None

    finished = meta.get("finished") or {}
    return {
        "items_per_s": finished.get("items_per_s"),
        "wall_s": finished.get("wall_s"),
        "requests_sent": finished.get("sent"),
        "cached": finished.get("cached"),
        "latency_p50_s": _percentile(latencies, 50),
        "latency_p95_s": _percentile(latencies, 95),
        "prompt_tokens_per_s": rate("prompt_tokens", "prompt_ns"),
        "decode_tokens_per_s": rate("completion_tokens", "eval_ns"),
    }


def build_report(
    records: Sequence[dict[str, Any]], meta: Mapping[str, Any], throughput: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    judges = [j["name"] for j in meta.get("judges", [])]
    groups = sorted({r["group"] for r in records})
    qa = [r for r in records if r["kind"] == "qa"]
    unscored = Counter()
    for r in qa:
        for vote in r.get("judges", {}).values():
            if vote["status"] not in SCORED:
                unscored[(vote["reason"] or vote["status"]).split(":")[0]] += 1
    report: dict[str, Any] = {
        "inputs": meta.get("inputs", []),
        "settings": meta.get("settings"),
        "judges": meta.get("judges", []),
        "complete": meta.get("finished") is not None,
        "n_items": len(records),
        "overall": _group_summary(records, judges),
        "groups": {g: _group_summary([r for r in records if r["group"] == g], judges) for g in groups}
        if len(groups) > 1
        else {},
        "unscored": {
            "items": sum(1 for r in qa if any(v["status"] not in SCORED for v in r.get("judges", {}).values())),
            "by_reason": dict(unscored),
        },
    }
    if judges and qa:
        report["judge_vs_metric"] = {name: _judge_vs_metric(qa, name) for name in judges}
        label_names = sorted({name for r in qa for name in r.get("labels", {})})
        report["judge_vs_labels"] = {
            label: {name: _judge_vs_labels(qa, name, label) for name in judges} for label in label_names
        }
        report["variance"] = {name: _variance(qa, name) for name in judges}
        if len(judges) > 1:
            complete = [
                [r["judges"][n]["verdict"] for n in judges]
                for r in qa
                if all(r["judges"].get(n, {}).get("status") in SCORED for n in judges)
            ]
            report["fleiss_kappa"] = {"n": len(complete), "kappa": fleiss_kappa(complete)}
    if throughput is not None:
        report["throughput"] = dict(throughput)
    return report


# ---------------------------------------------------------------------------------------------- markdown


def _fmt(value: Any, percent: bool = False) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{100 * value:.1f}%" if percent else f"{value:.3f}"
    return str(value)


def render_markdown(report: Mapping[str, Any]) -> str:
    lines = ["# Grading report", ""]
    if not report["complete"]:
        lines += ["**The grading run did not finish: pending items are counted as unscored.**", ""]
    settings = report.get("settings") or {}
    if settings:
        lines += [
            f"Rubric `{settings['rubric']}` (hash `{settings['rubric_hash']}`, mode {settings['mode']}); "
            f"options `{json.dumps(settings['options'])}`.",
            "",
        ]
    for judge in report["judges"]:
        lines.append(
            f"- judge `{judge['name']}` digest `{judge['digest'][:19]}` server {judge['server_version']} "
            f"context {judge['context_length']} at {judge['host']}"
        )
    for source in report["inputs"]:
        lines.append(
            f"- input `{source['path']}` ({source['format']}, {source['n_items']} items, "
            f"sha256 `{source['sha256'][:12]}`)"
        )
    lines += ["", "## Accuracy", ""]
    sections = {OVERALL: report["overall"], **report["groups"]}
    header = (
        "| group | n | EM | F1 | contains | "
        + " | ".join(f"{j['name']} (unscored, truncated)" for j in report["judges"])
        + (" | panel (disagree) |" if report["judges"] else "")
    )
    qa_rows = [header, "|" + "---|" * (header.count("|") - 1)]
    arc_rows = [
        "| group | tests | pass@1 | pass@2 | tasks solved | unparseable attempts |",
        "|---|---|---|---|---|---|",
    ]
    for name, summary in sections.items():
        if "qa" in summary:
            qa, metrics = summary["qa"], summary["qa"]["metrics"]
            cells = [
                name,
                str(qa["n"]),
                _fmt(metrics["em"], True),
                _fmt(metrics["f1"], True),
                _fmt(metrics["contains"], True),
            ]
            for j in report["judges"]:
                s = qa["judges"][j["name"]]
                cells.append(
                    f"{_fmt(s['accuracy'], True)} ({_fmt(s['unscored_rate'], True)}, {_fmt(s['truncated_rate'], True)})"
                )
            if report["judges"]:
                cells.append(f"{_fmt(qa['panel']['accuracy'], True)} ({_fmt(qa['panel']['disagree_rate'], True)})")
            qa_rows.append("| " + " | ".join(cells) + " |")
        if "arc" in summary:
            arc = summary["arc"]
            arc_rows.append(
                f"| {name} | {arc['n']} | {_fmt(arc['pass@1'], True)} | {_fmt(arc['pass@2'], True)} | "
                f"{arc['tasks_solved']}/{arc['tasks']} | {arc['unparseable_attempts']}/{arc['attempts']} |"
            )
    if len(qa_rows) > 2:
        lines += [
            "Judge accuracy is over scored items; unscored items are never counted as wrong.",
            "",
            *qa_rows,
            "",
        ]
    if len(arc_rows) > 2:
        lines += [*arc_rows, ""]
    unscored = report["unscored"]
    if unscored["items"]:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(unscored["by_reason"].items()))
        lines += [f"**Unscored items: {unscored['items']}** ({reasons}).", ""]
    if report.get("judge_vs_metric"):
        lines += [
            "## Judge against deterministic metrics",
            "",
            "| judge | metric | n | agreement | Cohen κ | confusion [[J+M+, J+M−], [J−M+, J−M−]] |",
            "|---|---|---|---|---|---|",
        ]
        for judge, by_metric in report["judge_vs_metric"].items():
            for metric, s in by_metric.items():
                lines.append(
                    f"| {judge} | {metric} | {s['n']} | {_fmt(s['agreement'], True)} | {_fmt(s['kappa'])} "
                    f"| {s['confusion']} |"
                )
        lines.append("")
    if report.get("fleiss_kappa"):
        fk = report["fleiss_kappa"]
        lines += [
            f"Fleiss κ across judges: {_fmt(fk['kappa'])} over {fk['n']} items scored by every judge.",
            "",
        ]
    for label, by_judge in (report.get("judge_vs_labels") or {}).items():
        lines += [
            f"## Judge against the input labels `{label}`",
            "",
            "| judge | labelled | agreement | κ | sensitivity | specificity | label acc. |",
            "|---|---|---|---|---|---|---|",
        ]
        for judge, s in by_judge.items():
            lines.append(
                f"| {judge} | {s['n']} | {_fmt(s['agreement'], True)} | {_fmt(s['kappa'])} | "
                f"{_fmt(s['sensitivity'], True)} | {_fmt(s['specificity'], True)} | "
                f"{_fmt(s['label_accuracy'], True)} |"
            )
        lines += [
            "",
            "Corrected accuracy (Rogan–Gladen, on the labels' scale, 95% CI):",
            "",
            "| judge | group | n | judge acc. | corrected (95% CI) |",
            "|---|---|---|---|---|",
        ]
        for judge, s in by_judge.items():
            for group, g in s["by_group"].items():
                corrected = g["corrected_accuracy"]
                text = (
                    "– (judge no better than chance on the labels)"
                    if corrected is None
                    else (
                        f"{_fmt(corrected['estimate'], True)} ({_fmt(corrected['ci95'][0], True)}–"
                        f"{_fmt(corrected['ci95'][1], True)})"
                    )
                )
                lines.append(f"| {judge} | {group} | {g['n']} | {_fmt(g['judge_accuracy'], True)} | {text} |")
        lines.append("")
    if report.get("variance"):
        lines += ["## Judge variance (re-judged with another seed)", ""]
        for judge, v in report["variance"].items():
            lines.append(
                f"- {judge}: {v['flips']} flips in {v['compared']} re-judged items ({_fmt(v['flip_rate'], True)})"
            )
        lines.append("")
    if report.get("throughput"):
        t = report["throughput"]
        lines += [
            "## Throughput",
            "",
            f"{_fmt(t['items_per_s'])} items/s over {_fmt(t['wall_s'])} s; "
            f"{t['requests_sent']} requests sent, "
            f"{t['cached']} answered from the cache; latency p50 {_fmt(t['latency_p50_s'])} s, "
            f"p95 {_fmt(t['latency_p95_s'])} s; prompt {_fmt(t['prompt_tokens_per_s'])} tokens/s, "
            f"decode {_fmt(t['decode_tokens_per_s'])} tokens/s (server counters).",
            "",
        ]
    return "\n".join(lines)


def _atomic_write(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


VERDICTS_FORMAT, VERDICTS_VERSION, VERDICTS_FILE = "seal-verdicts", 1, "verdicts.export.json"


def verdict_export(records: Sequence[dict[str, Any]], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The versioned verdict file a run directory imports (``seal grade import``)::

        {"format": "seal-verdicts", "version": 1,
         "inputs": [{"path", "sha256", "n_items", "provenance"}, ...],   # the bundles graded
         "judges": ["ollama:llama3.2:3b", ...], "rubric": "seal-yesno@1",
         "verdicts": {item_id: {"verdict": "correct" | "incorrect" | ... | null, "reason": str | null,
                                "votes": {judge: {"status", "verdict", "reason"}}}}}

    ``verdict`` null: unscored (judge down, unparseable or truncated replies, a split panel); it is never a wrong
    answer. QA items only: ARC items are decided by their metrics.
    """
    verdicts = {}
    for record in records:
        if record["kind"] != "qa" or "panel" not in record:
            continue
        panel = record["panel"]
        scored = panel not in (UNSCORED, DISAGREE)
        votes = {
            name: {"status": v.get("status"), "verdict": v.get("verdict"), "reason": v.get("reason")}
            for name, v in record.get("judges", {}).items()
        }
        reason = None if scored else "; ".join(f"{n}: {v['reason']}" for n, v in votes.items() if v["reason"]) or panel
        verdicts[record["item_id"]] = {"verdict": panel if scored else None, "reason": reason, "votes": votes}
    settings = meta.get("settings", {})
    return {
        "format": VERDICTS_FORMAT,
        "version": VERDICTS_VERSION,
        "inputs": list(meta.get("inputs", [])),
        "judges": [j["name"] for j in meta.get("judges", [])],
        "rubric": settings.get("rubric"),
        "verdicts": verdicts,
    }


def write_outputs(cache: JudgementCache, out_dir: str | Path) -> dict[str, Any]:
    """Rebuild ``verdicts.jsonl`` from the cache, write ``report.json``, ``report.md`` and, when a judge graded
    anything, the versioned ``verdicts.export.json``."""
    out = Path(out_dir)
    records = rebuild_verdicts(cache)
    meta = cache.meta()
    report = build_report(records, meta, _throughput(cache, meta))
    _atomic_write(out / "verdicts.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    if meta.get("judges"):
        exported = verdict_export(records, meta)
        _atomic_write(out / VERDICTS_FILE, json.dumps(exported, indent=1, ensure_ascii=False) + "\n")
    _atomic_write(out / "report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    _atomic_write(out / "report.md", render_markdown(report))
    return report
