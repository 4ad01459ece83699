"""The report: accuracy per group and judge, agreement figures, throughput, and rebuilding from the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grading.agreement import rogan_gladen
from grading.bundle import Item
from grading.cache import JudgementCache, PlanRow
from grading.report import OVERALL, build_report, read_verdicts, rebuild_verdicts, render_markdown, write_outputs
from tests.fixtures.ollama_server import FakeOllama
from tests.unit.grading.conftest import MODEL, qa_items, run_grade

J1, J2, J3 = "ollama:a", "ollama:b", "ollama:c"


def _record(i: int, em: float, votes: dict[str, str | None], group: str = "g", label: bool | None = None) -> dict:
    judges = {
        name: (
            {"status": "scored", "verdict": v} if v else {"status": "failed", "verdict": None, "reason": "timed out"}
        )
        for name, v in votes.items()
    }
    from grading.report import panel_verdict

    record = {
        "item_id": f"i{i}",
        "kind": "qa",
        "group": group,
        "metrics": {"em": em, "f1": em, "contains": em},
        "judges": judges,
        "panel": panel_verdict(list(judges.values())),
    }
    if label is not None:
        record["labels"] = {"gpt": label}
    return record


def test_report_figures_match_hand_counts() -> None:
    c, w = "correct", "incorrect"
    records = [
        _record(0, 1.0, {J1: c, J2: c, J3: c}, "x", True),
        _record(1, 1.0, {J1: c, J2: w, J3: c}, "x", True),
        _record(2, 0.0, {J1: w, J2: w, J3: w}, "x", False),
        _record(3, 0.0, {J1: c, J2: w, J3: w}, "y", False),
        _record(4, 1.0, {J1: None, J2: c, J3: c}, "y"),
    ]
    meta = {
        "judges": [
            {
                "name": n,
                "digest": "sha256:0",
                "server_version": "0.12.6",
                "context_length": 8192,
                "host": "http://127.0.0.1:11434",
            }
            for n in (J1, J2, J3)
        ]
    }
    report = build_report(records, meta)
    overall = report["overall"]["qa"]
    assert overall["metrics"]["em"] == pytest.approx(0.6)
    j1 = overall["judges"][J1]
    assert (j1["n"], j1["scored"], j1["accuracy"], j1["unscored_rate"]) == (5, 4, 0.75, 0.2)
    assert overall["judges"][J2]["accuracy"] == pytest.approx(2 / 5)
    assert overall["panel"]["verdicts"] == {c: 3, w: 2}
    assert report["groups"]["y"]["qa"]["n"] == 2
    assert report["unscored"] == {"items": 1, "retryable_items": 1, "by_reason": {"timed out": 1}}  # a failed request
    # J1 against EM on its 4 scored items: (c,1) (c,1) (w,0) (c,0) -> tp 2, fp 1, fn 0, tn 1
    vs_em = report["judge_vs_metric"][J1]["em"]
    assert vs_em["confusion"] == [[2, 1], [0, 1]]
    assert vs_em["agreement"] == pytest.approx(0.75)
    # kappa: p_o = .75; judge yes 3/4, em yes 2/4 -> p_e = .75*.5 + .25*.5 = .5 -> kappa = .5
    assert vs_em["kappa"] == pytest.approx(0.5)
    # Fleiss over the 4 items every judge scored: P_i = 1, 1/3, 1, 1/3 -> P_bar = 2/3;
    # c: 3+2+0+1 = 6 of 12, w: 6 -> P_e = .5 -> kappa = 1/3
    assert report["fleiss_kappa"] == {"n": 4, "kappa": pytest.approx(1 / 3)}
    labels = report["judge_vs_labels"]["gpt"][J1]
    # labelled + scored by J1: items 0..3 -> (c,T) (c,T) (w,F) (c,F): Se = 1, Sp = 1/2
    assert (labels["n"], labels["sensitivity"], labels["specificity"]) == (4, 1.0, 0.5)
    overall_corrected = labels["by_group"][OVERALL]
    assert overall_corrected["judge_accuracy"] == pytest.approx(0.75)
    expected = rogan_gladen(0.75, 4, 1.0, 2, 0.5, 2)
    assert overall_corrected["corrected_accuracy"]["estimate"] == pytest.approx(expected.estimate)
    assert overall_corrected["corrected_accuracy"]["ci95"] == pytest.approx([expected.low, expected.high])
    markdown = render_markdown(report)
    for heading in ("## Accuracy", "## Judge against deterministic metrics", "Fleiss κ", "input labels `gpt`"):
        assert heading in markdown


def test_outputs_are_rebuilt_from_the_cache(server: FakeOllama, tmp_path: Path) -> None:
    items = [
        *qa_items(6),
        Item("a/0", "arc", "", (((1,),),), attempts=("1",), task_id="a"),
        Item("a/1", "arc", "", (((2,),),), attempts=("x", "3"), task_id="a"),
    ]
    run_grade(server.url, items, tmp_path / "cache.sqlite", variance_sample=2)
    with JudgementCache(tmp_path / "cache.sqlite") as cache:
        report = write_outputs(cache, tmp_path)
    header, lines = read_verdicts(tmp_path / "verdicts.jsonl")
    assert header["format"] == "seal-grading-verdicts" and header["n_items"] == len(items) and header["complete"]
    assert [line["item_id"] for line in lines] == [i.item_id for i in items]
    assert json.loads((tmp_path / "report.json").read_text()) == json.loads(json.dumps(report))
    arc = report["overall"]["arc"]
    assert (arc["n"], arc["pass@1"], arc["tasks"], arc["tasks_solved"], arc["unparseable_attempts"]) == (
        2,
        0.5,
        1,
        0,
        1,
    )
    throughput = report["throughput"]
    assert throughput["requests_sent"] == 8 and throughput["latency_p50_s"] > 0
    assert throughput["prompt_tokens_per_s"] > 0 and throughput["decode_tokens_per_s"] > 0
    assert report["variance"][f"ollama:{MODEL}"] == {"sampled": 2, "compared": 2, "flips": 0, "flip_rate": 0.0}
    assert (tmp_path / "report.md").read_text().startswith("# Grading report")


def test_an_interrupted_run_reports_pending_items_as_unscored(tmp_path: Path) -> None:
    with JudgementCache(tmp_path / "cache.sqlite") as cache:
        judge = {"name": J1, "digest": "d", "server_version": "v", "context_length": None, "host": "h"}
        cache.start_run(
            {"judges": [judge], "finished": None},
            [("q", {"kind": "qa", "group": "g"}, {"em": 1.0, "f1": 1.0, "contains": 1.0})],
            [PlanRow("q", J1, 0, "k-never-answered")],
        )
        records = rebuild_verdicts(cache)
        report = write_outputs(cache, tmp_path)
    assert records[0]["judges"][J1]["status"] == "pending"
    assert records[0]["panel"] == "unscored"
    assert report["complete"] is False and report["unscored"]["items"] == 1
    assert "did not finish" in (tmp_path / "report.md").read_text()
