"""Verdict file and report, both rebuilt from the cache's run tables (so a killed run still has them).

``verdicts.jsonl``: a header line (format ``seal-grading-verdicts``, version, item count, inputs, judges; read it
with `read_verdicts`), then one line per item with its input file, its deterministic metrics, each judge's verdict
(status, reason, raw reply), the variance re-judge, the panel verdict and any labels from the input.
``report.json`` / ``report.md``: accuracy by group, metric and judge with unscored / truncated / disagree rates;
one row per input file and group (arm); each deterministic metric and each judge against the labels an input
carries (agreement, kappa, sensitivity, specificity; no judge needed); judge against deterministic metric
(confusion, agreement, Cohen's kappa); Fleiss' kappa across judges; judge against input labels with the
Rogan-Gladen corrected accuracy and its 95% interval; judge variance; throughput.
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
RETRYABLE = ("failed", "pending")  # unscored votes that running the grading again asks for
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
            "input": item.get("input"),
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
        counted = [r["metrics"] for r in arc if "outputs" in r["metrics"]]
        if counted:  # the exporter counted the model outputs behind the attempts
            summary["arc"]["outputs"] = int(sum(m["outputs"] for m in counted))
            summary["arc"]["unparseable_outputs"] = int(sum(m["unparseable_outputs"] for m in counted))
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


F1_CUT = 0.5
LABEL_TESTS = ("em", "contains", f"f1>={F1_CUT}")
ALL_GROUPS = "(all)"


def _slices(records: Sequence[dict[str, Any]]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(input, group, records): every input file, and each group (arm) inside it, plus the pooled whole."""
    by_input: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for record in records:
        by_input.setdefault(record.get("input") or "(unnamed input)", {}).setdefault(record["group"], []).append(record)
    slices = [(OVERALL, OVERALL, list(records))]
    for source, groups in by_input.items():
        if len(groups) > 1:
            slices.append((source, ALL_GROUPS, [r for members in groups.values() for r in members]))
        slices.extend((source, group, members) for group, members in sorted(groups.items()))
    return slices


def _by_input(records: Sequence[dict[str, Any]], judges: Sequence[str]) -> list[dict[str, Any]]:
    return [
        {"input": source, "group": group, **_group_summary(members, judges)}
        for source, group, members in _slices(records)[1:]
    ]


def _test_verdict(record: dict[str, Any], test: str) -> bool | None:
    """A deterministic metric as a yes/no verdict, or a judge's (None: that judge left the item unscored)."""
    if test.startswith("judge:"):
        vote = record.get("judges", {}).get(test.removeprefix("judge:"), {})
        return _binary(vote["verdict"]) if vote.get("status") in SCORED else None
    if test == f"f1>={F1_CUT}":
        return record["metrics"]["f1"] >= F1_CUT
    return record["metrics"][test] == 1.0


def _against_labels(records: Sequence[dict[str, Any]], test: str, label: str) -> dict[str, Any]:
    pairs = [(_test_verdict(r, test), r["labels"][label]) for r in records if label in r.get("labels", {})]
    decided = [(t, ref) for t, ref in pairs if t is not None]
    tested, reference = [t for t, _ in decided], [ref for _, ref in decided]
    confusion = Confusion.of(tested, reference)
    return {
        "n": len(decided),
        "unscored": len(pairs) - len(decided),
        "agreement": percent_agreement(tested, reference),
        "kappa": cohen_kappa(tested, reference),
        "sensitivity": confusion.sensitivity,
        "specificity": confusion.specificity,
        "test_accuracy": _rate(sum(tested), len(tested)),
        "label_accuracy": _rate(sum(reference), len(reference)),
        "confusion": confusion.as_matrix(),
    }


def _labels_agreement(qa: Sequence[dict[str, Any]], judges: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Per input label (e.g. the published GPT-4.1 verdicts): each deterministic metric, and each judge, against
    it, pooled and per input file and arm. Needs no judge: the metrics alone are compared with the labels."""
    tests = [*LABEL_TESTS, *(f"judge:{name}" for name in judges)]
    result: dict[str, list[dict[str, Any]]] = {}
    for label in sorted({name for r in qa for name in r.get("labels", {})}):
        rows = []
        for source, group, members in _slices(qa):
            labelled = [r for r in members if label in r.get("labels", {})]
            if labelled:
                tests_of = {test: _against_labels(labelled, test, label) for test in tests}
                rows.append({"input": source, "group": group, "n": len(labelled), "tests": tests_of})
        result[label] = rows
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
    # Only what this run asked the servers: a re-run answered from the cache has no server figures of its own.
    rows = cache.run_counters(since=meta.get("started_at"))
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
            # a failed or never-sent request is retried by running again; a cached reply without a verdict
            # (unparseable, truncated) is read back from the cache, so only --rescore or another judge changes it
            "retryable_items": sum(
                1 for r in qa if any(v["status"] in RETRYABLE for v in r.get("judges", {}).values())
            ),
            "by_reason": dict(unscored),
        },
    }
    report["by_input"] = _by_input(records, judges)
    if any(r.get("labels") for r in qa):
        report["labels_agreement"] = _labels_agreement(qa, judges)
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


def _qa_cells(qa: Mapping[str, Any], judges: Sequence[Mapping[str, Any]]) -> list[str]:
    metrics = qa["metrics"]
    cells = [str(qa["n"]), _fmt(metrics["em"], True), _fmt(metrics["f1"], True), _fmt(metrics["contains"], True)]
    for j in judges:
        s = qa["judges"][j["name"]]
        cells.append(
            f"{_fmt(s['accuracy'], True)} ({_fmt(s['unscored_rate'], True)}, {_fmt(s['truncated_rate'], True)})"
        )
    if judges:
        cells.append(f"{_fmt(qa['panel']['accuracy'], True)} ({_fmt(qa['panel']['disagree_rate'], True)})")
    return cells


def _arc_cells(arc: Mapping[str, Any]) -> list[str]:
    return [
        str(arc["n"]),
        _fmt(arc["pass@1"], True),
        _fmt(arc["pass@2"], True),
        f"{arc['tasks_solved']}/{arc['tasks']}",
        f"{arc['unparseable_attempts']}/{arc['attempts']}",
        f"{arc['unparseable_outputs']}/{arc['outputs']}" if "outputs" in arc else "–",
    ]


def _per_input_lines(report: Mapping[str, Any]) -> list[str]:
    rows = report.get("by_input") or []
    judges = report["judges"]
    lines: list[str] = []
    qa = [r for r in rows if "qa" in r]
    if qa:
        header = (
            "| input | group | n | EM | F1 | contains | "
            + " | ".join(f"{j['name']} (unscored, truncated)" for j in judges)
            + (" | panel (disagree) |" if judges else "")
        )
        lines += ["## Per input", "", header, "|" + "---|" * (header.count("|") - 1)]
        lines += ["| " + " | ".join([f"`{r['input']}`", r["group"], *_qa_cells(r["qa"], judges)]) + " |" for r in qa]
        lines.append("")
    arc = [r for r in rows if "arc" in r]
    if arc:
        if not qa:
            lines += ["## Per input", ""]
        lines += [
            "| input | group | tests | pass@1 | pass@2 | tasks solved | unparseable attempts "
            "| unparseable outputs (run) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += ["| " + " | ".join([f"`{r['input']}`", r["group"], *_arc_cells(r["arc"])]) + " |" for r in arc]
        lines.append("")
    return lines


def _labels_lines(report: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    for label, rows in (report.get("labels_agreement") or {}).items():
        lines += [
            f"## Against the input labels `{label}`",
            "",
            f"Each deterministic metric (F1 as a verdict at ≥ {F1_CUT}) and each judge, read as a yes/no verdict, "
            "against the labels the input carries; a judge is compared on the items it scored.",
            "",
            "| input | group | test | n | agreement | κ | sensitivity | specificity | test acc. | label acc. |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in rows:
            where = row["input"] if row["input"] == OVERALL else f"`{row['input']}`"
            for test, t in row["tests"].items():
                lines.append(
                    f"| {where} | {row['group']} | {test} | {t['n']} | {_fmt(t['agreement'], True)} | "
                    f"{_fmt(t['kappa'])} | {_fmt(t['sensitivity'], True)} | {_fmt(t['specificity'], True)} | "
                    f"{_fmt(t['test_accuracy'], True)} | {_fmt(t['label_accuracy'], True)} |"
                )
        lines.append("")
    return lines


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
        "| group | tests | pass@1 | pass@2 | tasks solved | unparseable attempts | unparseable outputs (run) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, summary in sections.items():
        if "qa" in summary:
            qa_rows.append("| " + " | ".join([name, *_qa_cells(summary["qa"], report["judges"])]) + " |")
        if "arc" in summary:
            arc_rows.append("| " + " | ".join([name, *_arc_cells(summary["arc"])]) + " |")
    if len(qa_rows) > 2:
        lines += [
            "Judge accuracy is over scored items; unscored items are never counted as wrong.",
            "",
            *qa_rows,
            "",
        ]
    if len(arc_rows) > 2:
        lines += [*arc_rows, ""]
    lines += _per_input_lines(report)
    lines += _labels_lines(report)
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
        # a rate over no requests (no judge, or every verdict from the cache) is a number about nothing
        rate = (
            f"{_fmt(t['items_per_s'])} items/s over {_fmt(t['wall_s'])} s; "
            if t.get("requests_sent")
            else "no judge requests timed; "
        )
        lines += [
            "## Throughput",
            "",
            rate + f"{t['requests_sent']} requests sent, "
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


VERDICT_LINES_FORMAT, VERDICT_LINES_VERSION = "seal-grading-verdicts", 1


def verdict_lines_header(records: Sequence[dict[str, Any]], meta: Mapping[str, Any]) -> dict[str, Any]:
    """First line of ``verdicts.jsonl``: what the lines after it are, and of which grading run."""
    settings = meta.get("settings") or {}
    return {
        "format": VERDICT_LINES_FORMAT,
        "version": VERDICT_LINES_VERSION,
        "n_items": len(records),
        "complete": meta.get("finished") is not None,
        "inputs": list(meta.get("inputs", [])),
        "judges": [j["name"] for j in meta.get("judges", [])],
        "rubric": settings.get("rubric"),
    }


def read_verdicts(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, records) of a ``verdicts.jsonl``, checked: the format and version this code reads, and as many
    records as the header announces (a truncated copy is refused). Errors name the file and the line."""
    source = Path(path)
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{source}: cannot read it ({exc})") from None
    parsed = []
    for number, line in enumerate(lines, start=1):
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}:{number}: not valid JSON ({exc.msg})") from None
    header = parsed[0] if parsed else None
    if not isinstance(header, dict) or header.get("format") != VERDICT_LINES_FORMAT:
        raise ValueError(
            f"{source}:1: field 'format': expected a {VERDICT_LINES_FORMAT!r} header line (a verdicts.jsonl "
            "written before headers existed: rebuild it with `seal grade report DIR`)"
        )
    if header.get("version") != VERDICT_LINES_VERSION:
        raise ValueError(
            f"{source}:1: field 'version': {header.get('version')!r}, this code reads version "
            f"{VERDICT_LINES_VERSION}; grade it with the same version of this project"
        )
    records = parsed[1:]
    if len(records) != header.get("n_items"):
        raise ValueError(
            f"{source}: the header announces {header.get('n_items')} items, the file has {len(records)} "
            "(a truncated copy?)"
        )
    return header, records


def write_outputs(cache: JudgementCache, out_dir: str | Path) -> dict[str, Any]:
    """Rebuild ``verdicts.jsonl`` from the cache, write ``report.json``, ``report.md`` and, when a judge graded
    anything, the versioned ``verdicts.export.json``."""
    out = Path(out_dir)
    records = rebuild_verdicts(cache)
    meta = cache.meta()
    report = build_report(records, meta, _throughput(cache, meta))
    lines = [verdict_lines_header(records, meta), *records]
    _atomic_write(out / "verdicts.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines))
    if meta.get("judges"):
        exported = verdict_export(records, meta)
        _atomic_write(out / VERDICTS_FILE, json.dumps(exported, indent=1, ensure_ascii=False) + "\n")
    else:  # an earlier judged grading's export would describe verdicts this report no longer has
        (out / VERDICTS_FILE).unlink(missing_ok=True)
    _atomic_write(out / "report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    _atomic_write(out / "report.md", render_markdown(report))
    return report
