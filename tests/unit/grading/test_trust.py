"""What a researcher comparing judges needs from the report: a row per input file and arm, the deterministic
metrics against the labels an input carries (no judge needed), honest progress and throughput, outputs that never
became ARC attempts, and no silent replacement of an earlier grading in the same --out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from grading.bundle import InputError, Item, item_from_json, write_bundle
from grading.cache import JudgementCache
from grading.report import OVERALL, read_verdicts, write_outputs
from runners.cli.grade import grade
from tests.fixtures.ollama_server import FakeOllama
from tests.unit.grading.conftest import MODEL, qa_items, run_grade

FAST = ["--timeout", "2", "--retries", "1", "--backoff", "0.01", "--variance-sample", "0", "--quiet"]


def _seal_file(path: Path, rows: list[tuple[str, str, str, bool, bool]]) -> str:
    """A published-SEAL-shaped result file: (gold, baseline answer, adapter answer, baseline label, adapter label)."""
    questions = [
        {
            "question": f"Question {i}?",
            "answer": gold,
            "baseline_answer": base,
            "adapter_answer": adapted,
            "baseline_correct": base_label,
            "adapter_correct": adapter_label,
        }
        for i, (gold, base, adapted, base_label, adapter_label) in enumerate(rows)
    ]
    path.write_text(json.dumps({"articles": [{"title": "T", "completions": [{"questions": questions}]}]}))
    return str(path)


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(grade, list(args), catch_exceptions=False)


def _row(report: dict[str, Any], source: str, group: str) -> dict[str, Any]:
    return next(r for r in report["by_input"] if r["input"] == source and r["group"] == group)


def test_each_input_file_and_arm_has_its_own_row_and_the_metrics_meet_the_labels(tmp_path: Path) -> None:
    # File a: the baseline is always wrong (labels agree), the adapter answers exactly (labels: 2 of 3 correct).
    a = _seal_file(
        tmp_path / "a.json",
        [
            ("Paris", "Rome", "Paris", False, True),
            ("Oslo", "Bergen", "Oslo", False, True),
            ("Bern", "Z", "Bern", False, False),
        ],
    )
    # File b: the labels say correct where the answer only contains the gold (EM misses them, contains does not).
    b = _seal_file(
        tmp_path / "b.json",
        [("Nile", "the Nile river", "Nile", True, True), ("Ural", "x", "Ural", False, True)],
    )
    out = tmp_path / "out"
    result = _invoke(a, b, "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())

    assert [(r["input"], r["group"]) for r in report["by_input"]] == [
        (a, "(all)"),
        (a, "adapter"),
        (a, "baseline"),
        (b, "(all)"),
        (b, "adapter"),
        (b, "baseline"),
    ]
    assert _row(report, a, "adapter")["qa"]["metrics"]["em"] == 1.0
    assert _row(report, a, "baseline")["qa"]["metrics"]["em"] == 0.0
    assert _row(report, b, "baseline")["qa"]["n"] == 2

    rows = report["labels_agreement"]["seal_published"]
    pooled = next(r for r in rows if r["input"] == OVERALL)
    assert pooled["n"] == 10 and set(pooled["tests"]) == {"em", "contains", "f1>=0.5"}
    adapter_a = next(r for r in rows if r["input"] == a and r["group"] == "adapter")["tests"]["em"]
    # EM says yes to all 3; the labels say yes to 2: agreement 2/3, sensitivity 1, specificity 0.
    assert (adapter_a["n"], adapter_a["agreement"], adapter_a["sensitivity"], adapter_a["specificity"]) == (
        3,
        pytest.approx(2 / 3),
        1.0,
        0.0,
    )
    assert adapter_a["label_accuracy"] == pytest.approx(2 / 3) and adapter_a["test_accuracy"] == 1.0
    baseline_b = next(r for r in rows if r["input"] == b and r["group"] == "baseline")["tests"]
    assert baseline_b["em"]["agreement"] == 0.5 and baseline_b["contains"]["agreement"] == 1.0
    markdown = (out / "report.md").read_text()
    assert "## Per input" in markdown and f"`{a}` | adapter" in markdown and f"`{b}` | baseline" in markdown
    assert "## Against the input labels `seal_published`" in markdown


def test_judges_meet_the_labels_per_file_too(server: FakeOllama, tmp_path: Path) -> None:
    a = _seal_file(tmp_path / "a.json", [("Paris", "Rome", "Paris", False, True)])
    out = tmp_path / "out"
    result = _invoke(a, "--judge", f"ollama:{MODEL}", "--host", server.url, "--out", str(out), *FAST)
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "report.json").read_text())["labels_agreement"]["seal_published"]
    judged = next(r for r in rows if r["input"] == a and r["group"] == "adapter")["tests"][f"judge:ollama:{MODEL}"]
    assert judged["n"] == 1 and judged["agreement"] == 1.0


def test_progress_counts_unusable_replies_as_unscored(server: FakeOllama, tmp_path: Path) -> None:
    server.always("garbage")
    lines: list[str] = []
    outcome, records = run_grade(server.url, qa_items(3), tmp_path / "c.sqlite", log=lines.append)
    assert outcome.stored == 3 and outcome.scored == 0
    assert "judge requests 3/3: 0 scored, 3 unscored (3 unparseable or truncated replies, 0 failed requests)" in lines
    assert all(r["judges"][f"ollama:{MODEL}"]["status"] == "unparseable" for r in records)


def test_a_fully_cached_rerun_reports_no_server_rates(server: FakeOllama, tmp_path: Path) -> None:
    cache_path = tmp_path / "c.sqlite"
    run_grade(server.url, qa_items(3), cache_path)
    with JudgementCache(cache_path) as cache:
        first = write_outputs(cache, tmp_path)["throughput"]
    assert first["requests_sent"] == 3 and first["decode_tokens_per_s"] is not None
    outcome, _ = run_grade(server.url, qa_items(3), cache_path)
    assert outcome.sent == 0 and outcome.cached == 3
    with JudgementCache(cache_path) as cache:
        again = write_outputs(cache, tmp_path)["throughput"]
    assert again["requests_sent"] == 0 and again["cached"] == 3
    assert again["decode_tokens_per_s"] is None and again["prompt_tokens_per_s"] is None
    assert again["latency_p50_s"] is None


def test_outputs_that_never_became_attempts_reach_the_report(tmp_path: Path) -> None:
    items = [
        {
            "item_id": "t/0",
            "kind": "arc",
            "task_id": "t",
            "gold": [[[1]]],
            "attempts": [],
            "outputs": {"total": 9, "unparseable": 9},
            "provenance": {},
        },
        {
            "item_id": "t/1",
            "kind": "arc",
            "task_id": "t",
            "gold": [[[2]]],
            "attempts": [[[2]]],
            "outputs": {"total": 8, "unparseable": 1},
            "provenance": {},
        },
    ]
    bundle = write_bundle(tmp_path / "b.jsonl", items, {"run_id": "r"})
    out = tmp_path / "out"
    assert _invoke(str(bundle), "--out", str(out), "--quiet").exit_code == 0
    arc = json.loads((out / "report.json").read_text())["overall"]["arc"]
    assert (arc["outputs"], arc["unparseable_outputs"], arc["attempts"]) == (17, 10, 1)
    assert "| 10/17 |" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    "outputs",
    [
        {"total": 2, "unparseable": 3},
        {"total": -1, "unparseable": 0},
        {"total": 2},
        [1, 2],
        {"total": True, "unparseable": 0},
    ],
)
def test_bad_output_counts_are_refused_naming_the_field(outputs: Any) -> None:
    record = {"item_id": "t", "kind": "arc", "gold": [[[1]]], "attempts": [], "outputs": outputs, "provenance": {}}
    with pytest.raises(InputError, match="field 'outputs'"):
        item_from_json(record, "b.jsonl", 2)
    with pytest.raises(InputError, match="only ARC items carry output counts"):
        item_from_json({**qa_items(1)[0].to_json(), "outputs": {"total": 1, "unparseable": 0}}, "b.jsonl", 2)


def test_another_input_into_the_same_out_is_refused_unless_added_or_replaced(tmp_path: Path) -> None:
    first = write_bundle(tmp_path / "first.jsonl", qa_items(2), {"run_id": "r1"})
    second_items = [Item(f"other/{i}", "qa", "q?", ("yes",), "yes") for i in range(3)]
    second = write_bundle(tmp_path / "second.jsonl", second_items, {"run_id": "r2"})
    out = tmp_path / "out"
    assert _invoke(str(first), "--out", str(out), "--quiet").exit_code == 0
    assert _invoke(str(first), "--out", str(out), "--quiet").exit_code == 0  # the same inputs: a resume
    before = (out / "report.json").read_text()

    refused = _invoke(str(second), "--out", str(out), "--quiet")
    assert refused.exit_code == 2
    assert f"{out} already holds the grading of other inputs: {first}" in refused.output
    assert "--add" in refused.output and "--replace" in refused.output
    assert (out / "report.json").read_text() == before, "the refusal must not touch the earlier report"

    assert _invoke(str(second), "--out", str(out), "--add", "--quiet").exit_code == 0
    header, records = read_verdicts(out / "verdicts.jsonl")
    assert [s["path"] for s in header["inputs"]] == [str(first), str(second)] and len(records) == 5

    assert _invoke(str(second), "--out", str(out), "--replace", "--quiet").exit_code == 0
    header, records = read_verdicts(out / "verdicts.jsonl")
    assert [s["path"] for s in header["inputs"]] == [str(second)] and len(records) == 3


def test_add_refuses_an_earlier_input_that_changed(tmp_path: Path) -> None:
    first = write_bundle(tmp_path / "first.jsonl", qa_items(2), {"run_id": "r1"})
    second = write_bundle(tmp_path / "second.jsonl", [Item("o/0", "qa", "q?", ("y",), "y")], {"run_id": "r2"})
    out = tmp_path / "out"
    assert _invoke(str(first), "--out", str(out), "--quiet").exit_code == 0
    write_bundle(first, qa_items(3), {"run_id": "r1"})
    result = _invoke(str(second), "--out", str(out), "--add", "--quiet")
    assert result.exit_code == 2 and f"{first}: changed since it was graded into this --out" in result.output


def test_add_without_the_judge_is_refused_and_a_judge_free_report_leaves_no_stale_export(
    server: FakeOllama, tmp_path: Path
) -> None:
    first = write_bundle(tmp_path / "first.jsonl", qa_items(2), {"run_id": "r1"})
    second = write_bundle(tmp_path / "second.jsonl", [Item("o/0", "qa", "q?", ("y",), "y")], {"run_id": "r2"})
    out, judge = tmp_path / "out", ["--judge", f"ollama:{MODEL}", "--host", server.url, *FAST]
    assert _invoke(str(first), *judge, "--out", str(out), "--quiet").exit_code == 0
    before = (out / "report.md").read_text()
    refused = _invoke(str(second), "--out", str(out), "--add", "--quiet")
    assert refused.exit_code == 2 and f"though it was graded by ollama:{MODEL}" in refused.output
    assert f"pass --judge ollama:{MODEL}" in refused.output and (out / "report.md").read_text() == before

    added = _invoke(str(second), *judge, "--out", str(out), "--add", "--quiet")
    assert added.exit_code == 0
    assert len(json.loads((out / "verdicts.export.json").read_text())["verdicts"]) == 3
    assert _invoke(str(first), "--out", str(out), "--replace", "--quiet").exit_code == 0  # no judge: metrics only
    assert not (out / "verdicts.export.json").exists(), "an export of verdicts this report no longer has"


def test_an_unknown_judge_scheme_is_a_usage_error(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b.jsonl", qa_items(1), {"run_id": "r"})
    result = _invoke(str(bundle), "--judge", "olama:x", "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "unknown scheme olama:" in result.output and "ollama pull" not in result.output
    assert not (tmp_path / "out").exists()


def test_a_truncated_verdict_file_is_refused(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b.jsonl", qa_items(3), {"run_id": "r"})
    out = tmp_path / "out"
    assert _invoke(str(bundle), "--out", str(out), "--quiet").exit_code == 0
    path = out / "verdicts.jsonl"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(ValueError, match="announces 3 items, the file has 2"):
        read_verdicts(path)
    path.write_text('{"item_id": "x"}\n')
    with pytest.raises(ValueError, match="seal-grading-verdicts"):
        read_verdicts(path)
