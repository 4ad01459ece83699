"""`seal arc rl` with the tiny random model on two real ARC tasks: what the loop records when the model writes
garbage, how iterations continue, how chunks meet at a barrier, and that a bad model spec costs nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from runners.cli import main
from runners.cli.driver import EXIT_WAITING
from runners.store import RunStore

SMALL = ["--profile", "cpu", "--no-progress",
         "--set", "model.spec=tiny", "--set", "ttt_data.nmax=4", "--set", "infer.max_new_tokens=8",
         "--set", "seal.max_new_tokens=24"]  # fmt: skip
CLONE_EVERYTHING = ["--set", "seal.invalid=train_zero_epochs", "--set", "seal.select=threshold",
                    "--set", "seal.threshold=0.0", "--set", "restem.epochs=2"]  # fmt: skip


def _rl(run_dir: Path, *extra: str) -> Any:
    return CliRunner().invoke(main, ["arc", "rl", "demo_arc", "--run-dir", str(run_dir), *SMALL, *extra])


def _records(run_dir: Path, stage: str) -> dict[str, Any]:
    return RunStore(run_dir).records(stage)


@pytest.fixture(scope="module")
def garbage_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished iteration in which the tiny model's self-edits are all unusable."""
    run_dir = tmp_path_factory.mktemp("seal") / "run"
    result = _rl(run_dir, "--set", "seal.decoding=free")
    assert result.exit_code == 0, result.output
    return run_dir


def test_garbage_self_edits_are_bounded_recorded_with_reasons_and_the_model_is_carried_forward(
    garbage_run: Path,
) -> None:
    samples = _records(garbage_run, "it0.sample")
    assert set(samples) == {"66e6c45b", "c7d4e6ad"}
    for record in samples.values():
        attempts = record.result["attempts"]
        assert len(attempts) == 4  # seal.max_attempts in the demo: bounded, never an endless retry
        assert not any(a["accepted"] for a in attempts)
        assert all(a["code"] and a["reason"] for a in attempts)  # every rejection says why
        assert record.result["slots"] == [0, 1]  # k = 2 slots filled with the first rejected draws
        assert record.result["generate_calls"] == record.result["rounds"] >= 2  # later rounds ask for what's missing
        assert record.result["prompt"][-1]["role"] == "user" and "------" in record.result["prompt"][-1]["content"]
    inner = _records(garbage_run, "it0.inner")
    assert set(inner) == {f"{t}.k{k}" for t in samples for k in (0, 1)}
    assert all(r.status == "invalid" and r.result["reward"] == 0.0 and r.reason for r in inner.values())
    assert _records(garbage_run, "it0.select")["select"].result["selected"] == []
    sft = _records(garbage_run, "it0.sft")["sft"].result
    assert sft["carried_forward"] and "carried forward" in sft["reason"]
    merge = _records(garbage_run, "it0.merge")["merge"]
    assert merge.result == {"carried_forward": True, "model": {"spec": "tiny"}} and merge.artifacts == {}
    assert all(r.result["model"] == {"spec": "tiny"} for r in _records(garbage_run, "it1.sample").values())
    it1_base = _records(garbage_run, "it1.base")  # the same model on the same views: reused, not recomputed
    assert all(r.result["reused_from"] == "it0.base" for r in it1_base.values())
    assert {u: r.result["evaluation"] for u, r in it1_base.items()} == {
        u: r.result["evaluation"] for u, r in _records(garbage_run, "it0.base").items()
    }
    report = (garbage_run / "report" / "arc_seal.md").read_text()
    assert "iteration-0 self-edits" in report and "0/4 = 0.00" in report and "carried forward" in report
    assert all(r.config_hash for r in inner.values())  # every line says which config produced it


def test_template_decoding_gives_usable_self_edits_that_are_applied_or_capped_with_a_reason(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = _rl(run_dir, "--set", "train.max_steps_cap=12")  # demo: seal.decoding=template; 4 examples x 3 epochs
    assert result.exit_code == 0, result.output
    assert "→ 4 of 4 sampled self-edits well-formed" in result.output  # each stage says what it found
    assert "self-edits solved their task" in result.output and "next model: tiny (carried forward)" in result.output
    samples = _records(run_dir, "it0.sample")
    assert all(a["accepted"] for r in samples.values() for a in r.result["attempts"])
    assert all(len(r.result["attempts"]) == 2 for r in samples.values())  # k = 2 accepted in the first round
    inner = _records(run_dir, "it0.inner")
    for record in inner.values():
        epochs = record.result["edit"]["training"]["num_train_epochs"]
        if epochs * 4 > 12:  # SEAL's step cap: recorded invalid with the reason, never answered
            assert record.status == "invalid" and record.result["code"] == "over_step_cap"
            assert "over SEAL's step cap" in record.reason and "evaluation" not in record.result
        else:
            assert record.status == "ok" and record.result["evaluation"]["train"]["steps"] == epochs * 4
            assert record.result["reward"] in (0.0, 1.0)


def test_raising_the_iteration_count_continues_a_finished_run(garbage_run: Path, tmp_path: Path) -> None:
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(garbage_run, run_dir)
    before = (run_dir / "stages" / "it0.inner" / "journal.jsonl").read_text()
    result = _rl(run_dir, "--iterations", "2", "--set", "seal.decoding=free")
    assert result.exit_code == 0, result.output
    assert "stage it0.inner: 4 selected, 4 already recorded, processed 0" in result.output
    assert "stage it1.select: 1 selected, 0 already recorded, processed 1" in result.output
    assert (run_dir / "stages" / "it0.inner" / "journal.jsonl").read_text() == before
    assert set(_records(run_dir, "it2.inner")) == {f"{t}.k{k}" for t in ("66e6c45b", "c7d4e6ad") for k in (0, 1)}
    assert "self-edits after RL iteration 2" in result.output


def test_two_chunks_meet_at_the_barriers_and_the_single_stages_run_once(tmp_path: Path) -> None:
    """Two workers taking turns (as two Colab sessions would): each runs its chunk until a stage needs the other
    chunk's units, says what it waits for and exits 75; the single-unit stages run once, whoever gets there."""
    run_dir = tmp_path / "run"
    outputs, finished = [], set()
    for turn in range(10):
        chunk = f"{turn % 2 + 1}/2"
        result = _rl(run_dir, "--chunk", chunk, *CLONE_EVERYTHING)
        outputs.append(result.output)
        if result.exit_code == 0:
            finished.add(chunk)
            if len(finished) == 2:
                break
            continue
        assert result.exit_code == EXIT_WAITING, result.output
        assert "waiting: stage " in result.output and "Traceback" not in result.output
    else:
        pytest.fail("the chunks never finished:\n" + "\n".join(outputs))
    assert "waiting: stage it0.select" in outputs[0] and "(chunk 2/2)" in outputs[0]  # told which chunk it waits for
    assert "stage it0.inner: 2 selected" in outputs[0]  # its own tasks' inner loops ran before the barrier
    assert len(_records(run_dir, "it0.select")["select"].result["selected"]) == 4  # both chunks' self-edits
    assert _records(run_dir, "it0.merge")["merge"].artifacts == {"model": "artifacts/it0.merge/merge/model"}
    model = {"artifact": "artifacts/it0.merge/merge/model"}
    assert all(r.result["model"] == model for r in _records(run_dir, "it1.inner").values())
    for stage in ("it0.select", "it0.sft", "it0.merge"):
        lines = (run_dir / "stages" / stage / "journal.jsonl").read_text().splitlines()
        assert len(lines) == 1, stage
    assert json.loads(lines[0])["status"] == "ok"
    assert _records(run_dir, "it0.sft")["sft"].result["steps"] == 2  # 4 rows in one batch of 5, 2 epochs


def test_a_bad_model_spec_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["arc", "rl", "demo_arc", "--run-dir", str(run_dir), *SMALL, "--set", "model.spec=tiny:x"]
    )
    assert result.exit_code == 1 and "model.spec" in result.output and "Traceback" not in result.output
    assert not (run_dir / "manifest.json").exists()
    assert _rl(run_dir, "--limit", "0").exit_code in (0, EXIT_WAITING)  # the corrected command is accepted


def test_loop_settings_are_checked_before_the_manifest(tmp_path: Path) -> None:
    for bad, message in (
        ("seal.max_attempts=1", "seal.max_attempts"),
        ("seal.self_edits=0", "seal.self_edits"),
        ("infer.backend=vllm", "infer.backend"),
    ):
        result = _rl(tmp_path / "run", "--set", bad)
        assert result.exit_code == 1 and message in result.output, (bad, result.output)
        assert not (tmp_path / "run" / "manifest.json").exists()


def test_export_covers_every_iteration_and_control_with_provenance(tmp_path: Path) -> None:
    from grading.bundle import read_bundle

    run_dir = tmp_path / "run"
    controls = [
        "--set",
        "controls.oracle=true",
        "--set",
        "controls.wrong_task=true",
        "--set",
        "controls.format_matched=true",
    ]
    assert _rl(run_dir, "--set", "train.max_steps_cap=null", *controls).exit_code == 0
    bundle = tmp_path / "bundle.jsonl"
    result = CliRunner().invoke(main, ["export", str(run_dir), "--out", str(bundle)])
    assert result.exit_code == 0, result.output
    items = read_bundle(bundle)
    conditions = {item.provenance["condition"] for item in items}
    assert conditions == {
        "it0.base",
        "it0.inner",
        "ctl.format",
        "ctl.oracle",
        "ctl.wrong_task",
        "it1.base",
        "it1.inner",
    }
    inner = [item for item in items if item.provenance["condition"] == "it1.inner"]
    assert {item.provenance["unit"] for item in inner} == {
        f"{t}.k{k}" for t in ("66e6c45b", "c7d4e6ad") for k in (0, 1)
    }
    assert len({item.item_id for item in items}) == len(items)  # every evaluation's answer is its own item
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert all(item.provenance["config_hash"] == manifest["config_hash"] for item in items)
    assert all(item.gold for item in items)
    assert all(item.outputs and 0 <= item.outputs["unparseable"] <= item.outputs["total"] for item in items)
    assert all(item.group == item.provenance["condition"] for item in items)  # one report row per stage
    graded = CliRunner().invoke(main, ["grade", str(bundle), "--out", str(tmp_path / "grades"), "--quiet"])
    assert graded.exit_code == 0, graded.output
    report = json.loads((tmp_path / "grades" / "report.json").read_text())
    assert {row["group"] for row in report["by_input"]} - {"(all)"} == conditions


def test_only_and_limit_name_tasks_and_later_stages_wait_instead_of_crashing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    only = _rl(run_dir, "--only", "c7d4e6ad", "--set", "seal.decoding=free")
    assert only.exit_code == EXIT_WAITING, only.output
    # The task goes through sampling and its inner loops (they need only its own samples); selection needs all.
    assert "waiting: stage it0.select needs it0.sample: 1 of 2 units not recorded yet" in only.output, only.output
    assert set(_records(run_dir, "it0.inner")) == {"c7d4e6ad.k0", "c7d4e6ad.k1"}  # both self-edits of the task
    limited = _rl(run_dir, "--limit", "1", "--set", "seal.decoding=free")  # the first task: 66e6c45b
    assert limited.exit_code == 0, limited.output  # now every task is recorded: the run goes to the end
    assert set(_records(run_dir, "it0.inner")) == {f"{t}.k{k}" for t in ("66e6c45b", "c7d4e6ad") for k in (0, 1)}
    unknown = _rl(run_dir, "--only", "nosuchtask", "--set", "seal.decoding=free")
    assert unknown.exit_code == 1 and "nosuchtask" in unknown.output and "Traceback" not in unknown.output
