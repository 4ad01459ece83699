"""`seal knowledge rl` with the tiny random model on the project's passages: the loop end to end, rewards from
metrics, an in-loop judge and deferred grading (real HTTP to the loopback Ollama), and bad configs costing nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from runners.cli import main
from runners.cli.driver import EXIT_WAITING
from runners.store import RunStore, UnitRecord
from tests.fixtures.ollama_server import FakeOllama

REPO = Path(__file__).resolve().parents[3]
SMALL = ["--profile", "cpu", "--no-progress",
         "--set", "model.spec=tiny", "--set", "knowledge.train.epochs=1", "--set", "seal.max_new_tokens=24",
         "--set", "knowledge.answer_max_new_tokens=6", "--set", "restem.epochs=1"]  # fmt: skip
JUDGE = "judge:1b"


def _rl(run_dir: Path, *extra: str) -> Any:
    return CliRunner().invoke(main, ["knowledge", "rl", "demo", "--run-dir", str(run_dir), *SMALL, *extra])


def _records(run_dir: Path, stage: str) -> dict[str, Any]:
    return RunStore(run_dir).records(stage)


@pytest.fixture(scope="module")
def metric_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("knowledge") / "run"
    result = _rl(run_dir)
    assert result.exit_code == 0, result.output
    return run_dir


def test_one_iteration_samples_applies_rewards_clones_the_best_per_passage_and_evaluates_the_new_model(
    metric_run: Path,
) -> None:
    samples = _records(metric_run, "it0.sample")
    assert sorted(samples) == ["p0000", "p0001"]
    assert all(isinstance(r.result["prompt"], list) for r in samples.values())  # tiny has a chat template: chat
    inner = _records(metric_run, "it0.inner")
    assert sorted(inner) == ["p0000.k0", "p0000.k1", "p0001.k0", "p0001.k1"]
    base = _records(metric_run, "it0.base")
    for unit, record in inner.items():
        if record.status != "ok":
            continue
        scores = record.result["evaluation"]["scores"]
        base_nll = base[unit.split(".")[0]].result["evaluation"]["scores"]["nll"]
        assert record.result["reward"] == pytest.approx(base_nll - scores["nll"])  # reward: NLL decrease
        rounds = record.result["evaluation"]["rounds"]
        assert len(rounds) == 1 and len(rounds[0]["answers"]) == 4 and rounds[0]["train"]["steps"] > 0
    selected = _records(metric_run, "it0.select")["select"].result
    assert selected["rule"] == "top1" and len(selected["selected"]) == len({g for g, _ in selected["selected"]})
    for group, k in selected["selected"]:  # the best self-edit of its passage
        rewards = [r.result["reward"] for u, r in inner.items() if u.startswith(group) and r.status == "ok"]
        assert inner[f"{group}.k{k}"].result["reward"] == max(rewards)
    sft = _records(metric_run, "it0.sft")["sft"].result
    assert not sft["carried_forward"] and sft["rows_used"] == len(selected["selected"])
    assert _records(metric_run, "it0.merge")["merge"].result["model"] == {"artifact": "artifacts/it0.merge/merge/model"}
    assert sorted(_records(metric_run, "it1.inner")) == sorted(inner)
    report = (metric_run / "report" / "knowledge_seal.md").read_text()
    assert "passage + self-edits after RL iteration 1" in report and "gold NLL" in report


def test_a_finished_run_is_resumed_without_work_and_raising_iterations_continues_it(metric_run: Path) -> None:
    again = _rl(metric_run)
    stage_lines = [line for line in again.output.splitlines() if line.startswith("stage ")]
    assert again.exit_code == 0 and stage_lines and all("processed 0" in line for line in stage_lines)
    more = CliRunner().invoke(
        main, ["knowledge", "rl", "demo", "--iterations", "2", "--run-dir", str(metric_run), *SMALL]
    )
    assert more.exit_code == 0, more.output
    assert _records(metric_run, "it1.merge") and sorted(_records(metric_run, "it2.inner")) == sorted(
        _records(metric_run, "it0.inner")
    )
    assert _records(metric_run, "it1.base")["p0000"].result["model"] == {"artifact": "artifacts/it0.merge/merge/model"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["knowledge.source=nowhere.json"], "knowledge.source: nowhere.json does not exist"),
        (["knowledge.eval_passages=[0, 2]"], "overlaps knowledge.train_passages"),
        (["knowledge.train_passages=[0, 40]"], "has 10"),
        (["knowledge.correct=judge"], "judge needs judge.spec"),
        (["judge.spec=olama:x"], "judge.spec: judge spec 'olama:x': unknown scheme olama:"),
        (["seal.decoding=template"], "samples free text"),
    ],
)
def test_bad_configs_are_refused_before_anything_is_written(tmp_path: Path, overrides: list[str], message: str) -> None:
    run_dir = tmp_path / "run"
    result = _rl(run_dir, *(x for o in overrides for x in ("--set", o)))
    assert result.exit_code == 1 and message in result.output, result.output
    assert not run_dir.exists()


def test_an_in_loop_judge_decides_accuracy_and_its_verdicts_are_recorded(tmp_path: Path) -> None:
    with FakeOllama(models=(JUDGE,)) as fake:
        result = _rl(
            tmp_path / "run",
            "--set", f"judge.spec=ollama:{JUDGE}", "--set", f"judge.host={fake.url}", "--set", "knowledge.correct=auto",
            "--set", "knowledge.reward=accuracy", "--set", "seal.evaluate_final=false",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        chats = [r for r in fake.state.records if r.path == "/api/chat" and "Quillon" in r.user_message]
    inner = _records(tmp_path / "run", "it0.inner")
    assert chats  # the judge was asked over HTTP
    for record in inner.values():
        if record.status == "ok":
            (round_,) = record.result["evaluation"]["rounds"]
            assert len(round_["verdicts"]) == 4 and all(v in ("correct", "incorrect") for v in round_["verdicts"])
            expected = sum(v == "correct" for v in round_["verdicts"]) / 4
            assert record.result["reward"] == pytest.approx(expected)
    assert (tmp_path / "run" / "grading" / "judge-cache.sqlite").exists()


def test_an_in_loop_judge_that_fails_records_errors_not_rewards_and_the_next_run_retries_them(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    judged = ["--set", f"judge.spec=ollama:{JUDGE}", "--set", "knowledge.correct=auto",
              "--set", "knowledge.reward=accuracy", "--set", "seal.evaluate_final=false"]  # fmt: skip
    with FakeOllama(models=(JUDGE,)) as fake:
        fake.always("500")  # it answers its version and loads the model, then fails every verdict
        failed = _rl(run_dir, *judged, "--set", f"judge.host={fake.url}", "--set", "judge.retries=1")
        assert failed.exit_code == 1, failed.output
        assert f"judge ollama:{JUDGE} failed" in failed.output and "run again" in failed.output
        assert "Traceback" not in failed.output
        base = _records(run_dir, "it0.base")
        assert base and all(r.status == "error" and "judge" in r.reason for r in base.values())
        assert not _records(run_dir, "it0.inner") and not _records(run_dir, "it0.select")
        log = "".join(p.read_text() for p in (run_dir / "logs").glob("worker-*.log"))
        assert "Traceback" in log  # the full traceback is in the worker's log file only

        fake.always(None)
        again = _rl(run_dir, *judged, "--set", f"judge.host={fake.url}")
        assert again.exit_code == 0, again.output
    inner = _records(run_dir, "it0.inner")
    assert all(r.status != "error" for r in inner.values())
    assert all(r.result["reward"] is not None for r in inner.values() if r.status == "ok")
    assert "unscored" not in again.output


def test_an_unreachable_in_loop_judge_is_refused_in_one_line_before_anything_runs(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = _rl(run_dir, "--set", f"judge.spec=ollama:{JUDGE}", "--set", "judge.host=http://127.0.0.1:9",
                 "--set", "knowledge.correct=auto", "--set", "judge.retries=1")  # fmt: skip
    assert result.exit_code == 1, result.output
    assert f"judge.spec ollama:{JUDGE} does not answer: Ollama at http://127.0.0.1:9" in result.output
    assert "Traceback" not in result.output and not run_dir.exists()


def test_deferred_grading_with_a_metric_chosen_by_name_says_it_is_not_used(tmp_path: Path, caplog: Any) -> None:
    from runners.config import load_config
    from runners.pipelines import knowledge_seal
    from runners.platform import resolve_profile

    cfg = load_config("demo", resolve_profile("cpu"), ["model.spec=tiny", "judge.spec=deferred"])
    with caplog.at_level("WARNING"):
        knowledge_seal.stages(cfg, RunStore(tmp_path / "run"))
    assert "judge.spec deferred is not used: knowledge.correct is contains" in caplog.text


def test_deferred_grading_waits_for_verdicts_graded_elsewhere_then_the_iteration_continues(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    deferred = ["--set", "judge.spec=deferred", "--set", "knowledge.reward=accuracy",
                "--set", "knowledge.correct=judge", "--set", "seal.evaluate_final=false"]  # fmt: skip
    first = _rl(run_dir, *deferred)
    assert first.exit_code == EXIT_WAITING, first.output
    bundle = run_dir / "grading" / "it0" / "bundle.jsonl"
    assert "waiting" in first.output and str(bundle) in first.output
    header, *items = [json.loads(line) for line in bundle.read_text().splitlines()]
    assert header["provenance"]["run_id"] and header["n_items"] == len(items) == 2 * 4 + 4 * 4  # base + 4 edits
    inner_item = next(i for i in items if ".k" in i["item_id"])
    assert {"iteration", "passage", "self_edit", "round", "question"} <= set(inner_item["provenance"])
    assert all(r.result["reward"] is None for r in _records(run_dir, "it0.inner").values() if r.status == "ok")
    assert "16 answers of 4 self-edits unscored" in first.output  # answers and the self-edits holding them
    assert _rl(run_dir, *deferred).exit_code == EXIT_WAITING  # still waiting: nothing imported

    grades = tmp_path / "grades"
    with FakeOllama(models=(JUDGE,)) as fake:
        graded = subprocess.run(
            [sys.executable, "-m", "runners.cli", "grade", str(bundle), "--judge", f"ollama:{JUDGE}",
             "--host", fake.url, "--out", str(grades), "--variance-sample", "0"],
            cwd=REPO, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert graded.returncode == 0, graded.stderr[-2000:]
    export = json.loads((grades / "verdicts.export.json").read_text())
    assert export["format"] == "seal-verdicts" and export["version"] == 1
    unscored_id = inner_item["item_id"]
    export["verdicts"][unscored_id]["verdict"] = None  # as if the judge had been down for this one
    (grades / "verdicts.export.json").write_text(json.dumps(export))

    imported = CliRunner().invoke(main, ["grade", "import", str(run_dir), str(grades)])
    assert imported.exit_code == 0 and "1 unscored" in imported.output, imported.output
    again = CliRunner().invoke(main, ["grade", "import", str(run_dir), str(grades)])
    assert again.exit_code == 0  # idempotent

    # One answer unscored: its self-edit's reward is not final, so the stage keeps waiting and says for what.
    waiting = _rl(run_dir, *deferred)
    assert waiting.exit_code == EXIT_WAITING, waiting.output
    assert "1 of 24 answers of it0 are still unscored" in waiting.output and "seal grade import" in waiting.output
    assert not _records(run_dir, "it0.reward") and not _records(run_dir, "it0.select")
    # What an earlier version recorded meanwhile (ok, reward None although unscored) is not taken as done.
    journal = RunStore(run_dir).journal("it0.reward")
    for name in _records(run_dir, "it0.inner"):
        journal.append(UnitRecord(name, "ok", None, {"reward": None, "base_reward": None, "k": 0}, 0.0))
    assert _rl(run_dir, *deferred).exit_code == EXIT_WAITING

    # Graded again where the judge answers (the same --out retries what is unscored), imported: the rewards follow.
    with FakeOllama(models=(JUDGE,)) as fake:
        regraded = subprocess.run(
            [sys.executable, "-m", "runners.cli", "grade", str(bundle), "--judge", f"ollama:{JUDGE}",
             "--host", fake.url, "--out", str(grades), "--variance-sample", "0"],
            cwd=REPO, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert regraded.returncode == 0, regraded.stderr[-2000:]
    imported = CliRunner().invoke(main, ["grade", "import", str(run_dir), str(grades)])
    assert imported.exit_code == 0 and "24 of 24 answers scored, 0 unscored" in imported.output, imported.output

    done = _rl(run_dir, *deferred)
    assert done.exit_code == 0, done.output
    assert "stage it0.reward: 4 selected, 0 already recorded, processed 4" in done.output
    rewards = _records(run_dir, "it0.reward")
    verdicts = json.loads((grades / "verdicts.export.json").read_text())["verdicts"]
    for name, record in rewards.items():
        assert record.status == "ok" and record.result["unscored"] == 0
        mine = [v["verdict"] for k, v in verdicts.items() if k.startswith(f"it0/{name}/")]
        assert None not in mine
        assert record.result["reward"] == pytest.approx(sum(v == "correct" for v in mine) / len(mine))
    select = _records(run_dir, "it0.select")["select"].result
    assert select["candidates"] == select["scored"] == 4
    assert f"{len(select['selected'])} of 4 scored self-edits selected" in done.output


def test_rewards_an_older_version_recorded_unscored_refuse_a_run_that_already_selected_on_them(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    deferred = ["--set", "judge.spec=deferred", "--set", "knowledge.reward=accuracy",
                "--set", "knowledge.correct=judge", "--set", "seal.evaluate_final=false"]  # fmt: skip
    assert _rl(run_dir, *deferred).exit_code == EXIT_WAITING
    bundle = run_dir / "grading" / "it0" / "bundle.jsonl"
    grades = tmp_path / "grades"
    with FakeOllama(models=(JUDGE,)) as fake:
        graded = subprocess.run(
            [sys.executable, "-m", "runners.cli", "grade", str(bundle), "--judge", f"ollama:{JUDGE}",
             "--host", fake.url, "--out", str(grades), "--variance-sample", "0"],
            cwd=REPO, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert graded.returncode == 0, graded.stderr[-2000:]
    assert CliRunner().invoke(main, ["grade", "import", str(run_dir), str(grades)]).exit_code == 0
    store = RunStore(run_dir)  # as the old version left it: rewards null, and the selection made on them
    for name in _records(run_dir, "it0.inner"):
        store.journal("it0.reward").append(UnitRecord(name, "ok", None, {"reward": None, "k": 0}, 0.0))
    store.journal("it0.select").append(UnitRecord("select", "ok", None, {"candidates": 4, "selected": []}, 0.0))
    refused = _rl(run_dir, *deferred)
    assert refused.exit_code == 1 and "Traceback" not in refused.output, refused.output
    assert "it0.select already ran on them" in refused.output and "new run directory" in refused.output
    assert all(r.result["reward"] is None for r in _records(run_dir, "it0.reward").values())  # nothing rewritten

    verdicts_file = run_dir / "grading" / "it0" / "verdicts.json"
    verdicts_file.write_text('{"verd\x01icts": {}}')  # a control character: not valid JSON
    report = CliRunner().invoke(main, ["report", str(run_dir)])
    assert report.exit_code != 0 and str(verdicts_file) in report.output, report.output


def test_grades_of_another_run_or_an_edited_bundle_are_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    waiting = _rl(run_dir, "--set", "judge.spec=deferred", "--set", "knowledge.correct=auto",
                  "--set", "seal.evaluate_final=false")  # fmt: skip
    assert waiting.exit_code == EXIT_WAITING, waiting.output
    grades = tmp_path / "grades"
    grades.mkdir()
    bundle = run_dir / "grading" / "it0" / "bundle.jsonl"
    source = {"path": "b.jsonl", "sha256": "0" * 64, "provenance": {"run_id": "someoneelse"}}
    fake_export = {"format": "seal-verdicts", "version": 1, "judges": ["x"], "rubric": "r", "verdicts": {},
                   "inputs": [source]}  # fmt: skip
    (grades / "verdicts.export.json").write_text(json.dumps(fake_export))
    other = CliRunner().invoke(main, ["grade", "import", str(run_dir), str(grades)])
    assert other.exit_code == 2 and "not of this run" in other.output
    fake_export["inputs"][0]["provenance"] = json.loads(bundle.read_text().splitlines()[0])["provenance"]
    (grades / "verdicts.export.json").write_text(json.dumps(fake_export))
    edited = CliRunner().invoke(main, ["grade", "import", str(run_dir), str(grades)])
    assert edited.exit_code == 2 and "byte for byte" in edited.output
    (grades / "verdicts.export.json").write_text(json.dumps({**fake_export, "version": 9}))
    assert "version" in CliRunner().invoke(main, ["grade", "import", str(run_dir), str(grades)]).output
    assert not (run_dir / "grading" / "it0" / "verdicts.json").exists()


def test_held_out_passages_evaluate_the_base_and_the_final_model_beside_the_controls(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = _rl(
        run_dir,
        "--set", "knowledge.eval_passages=[2, 4]", "--set", "knowledge.passage_only=true",
        "--set", "knowledge.passage_repeated=true",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    stages = sorted(p.name for p in (run_dir / "stages").iterdir())
    assert {"eval0.sample", "eval0.inner", "ctl.passage", "ctl.repeat", "eval1.inner", "it0.merge"} <= set(stages)
    assert "it1.inner" not in stages  # the final model is evaluated on the held-out passages only
    assert sorted(_records(run_dir, "eval1.inner")) == ["p0002.k0", "p0002.k1", "p0003.k0", "p0003.k1"]
    assert _records(run_dir, "eval1.base")["p0002"].result["model"] == {"artifact": "artifacts/it0.merge/merge/model"}
    samples = _records(run_dir, "eval0.sample")
    for passage, record in _records(run_dir, "ctl.repeat").items():
        accepted = [a for a in samples[passage].result["attempts"] if a["accepted"]]
        lengths = [len(a["edit"]["segments"]) + 1 for a in accepted]  # + the passage itself
        assert record.result["copies"] == (max(1, round(sum(lengths) / len(lengths))) if lengths else 1)
        assert record.result["evaluation"]["sequences"] == record.result["copies"]
    assert _records(run_dir, "ctl.passage")["p0002"].result["evaluation"]["sequences"] == 1
    report = (run_dir / "report" / "knowledge_seal.md").read_text()
    assert "train on passage only" in report and "passage repeated (control)" in report


def test_the_selection_line_counts_the_scored_candidates_not_all_of_them(tmp_path: Path) -> None:
    from runners.pipelines.seal_loop import stage_outcome

    store = RunStore(tmp_path / "run")
    result = {"rule": "top1", "candidates": 4, "scored": 0, "selected": []}
    store.journal("it0.select").append(UnitRecord("select", "ok", None, result, 0.0))
    line = stage_outcome(None, store, "it0.select")  # type: ignore[arg-type]
    assert line == "0 of 0 scored self-edits selected (top1); 4 candidates without a reward"


def test_a_selection_records_how_many_of_its_candidates_were_scored(metric_run: Path) -> None:
    inner = _records(metric_run, "it0.inner")
    select = _records(metric_run, "it0.select")["select"].result
    ok = [r for r in inner.values() if r.status == "ok"]
    assert select["candidates"] == len(ok)
    assert select["scored"] == sum(1 for r in ok if r.result["reward"] is not None)


def test_an_in_loop_judge_whose_replies_do_not_parse_leaves_answers_unscored_as_data(tmp_path: Path) -> None:
    """Prose instead of a verdict is the judge's own output: cached as given, so a retry would read it again and the
    run could never finish. It is recorded (unscored, counted, reward None), not an error; a request that fails is."""
    run_dir = tmp_path / "run"
    judged = ["--set", f"judge.spec=ollama:{JUDGE}", "--set", "knowledge.correct=auto",
              "--set", "knowledge.reward=accuracy", "--set", "seal.evaluate_final=false"]  # fmt: skip
    with FakeOllama(models=(JUDGE,)) as fake:
        fake.always("garbage")
        result = _rl(run_dir, *judged, "--set", f"judge.host={fake.url}", "--set", "judge.retries=1")
    assert result.exit_code == 0, result.output
    inner = _records(run_dir, "it0.inner")
    assert inner and all(r.status == "ok" and r.result["reward"] is None for r in inner.values())
    assert "answers of 4 self-edits unscored" in result.output
