"""What `seal run` checks before a run directory gets its manifest: the model spec, config values out of range and
the run options (a refused command leaves no directory behind, so the corrected one starts cleanly) and, on resume,
the data the pipeline reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from runners.cli import main

TASK = {"train": [{"input": [[1, 0]], "output": [[0, 1]]}], "test": [{"input": [[1, 1]], "output": [[1, 1]]}]}


def _ttt(run_dir: Path, *sets: str, limit: int = 0):  # type: ignore[no-untyped-def]
    args = [
        "ttt",
        "run",
        "demo_ttt",
        "--run-dir",
        str(run_dir),
        "--profile",
        "cpu",
        "--no-progress",
        "--limit",
        str(limit),
    ]
    for item in sets:
        args += ["--set", item]
    return CliRunner().invoke(main, args)


def test_a_bad_model_spec_is_refused_before_the_manifest_and_the_fixed_command_then_runs(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    refused = _ttt(run_dir, "model.spec=nobody/not-cached-anywhere", "arc.task_ids=[66e6c45b]")  # HF_HUB_OFFLINE=1
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "model.spec" in refused.output and "HF_HUB_OFFLINE" in refused.output
    assert not run_dir.exists(), "a refused command left a run directory behind"
    assert "tiny:<seed>" in _ttt(run_dir, "model.spec=./no/such/folder").output and not run_dir.exists()
    fixed = _ttt(run_dir, "model.spec=tiny", "arc.task_ids=[66e6c45b]")
    assert fixed.exit_code == 0, fixed.output
    assert json.loads((run_dir / "manifest.json").read_text())["config"]["model"]["spec"] == "tiny"


def test_changed_task_content_is_refused_on_resume_naming_the_task(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "aa11.json").write_text(json.dumps(TASK))
    (tasks / "bb22.json").write_text(json.dumps(TASK))
    run_dir = tmp_path / "run"
    sets = ("model.spec=tiny", f"arc.source={tasks}", "arc.subset=null", "arc.task_ids=[]", "ttt_data.nmax=2",
            "infer.max_new_tokens=4")  # fmt: skip
    assert _ttt(run_dir, *sets, limit=1).exit_code == 0  # one task recorded: now the run has results to protect
    assert set(json.loads((run_dir / "manifest.json").read_text())["data_identity"]) == {"arc/aa11", "arc/bb22"}
    assert _ttt(run_dir, *sets).exit_code == 0  # same data: resumes
    edited = {**TASK, "test": [{"input": [[1, 1]], "output": [[2, 2]]}]}  # a corrected solution
    (tasks / "bb22.json").write_text(json.dumps(edited))
    refused = _ttt(run_dir, *sets)
    assert refused.exit_code == 1 and "data arc/bb22: content changed" in refused.output
    assert "arc/aa11" not in refused.output
    assert _ttt(run_dir, *sets, "run.claim_timeout_s=60").exit_code == 1  # an excluded key does not hide it
    allowed = CliRunner().invoke(
        main,
        ["ttt", "run", "demo_ttt", "--run-dir", str(run_dir), "--profile", "cpu", "--no-progress", "--limit", "0",
         "--allow-config-change", *[x for s in sets for x in ("--set", s)]],
    )  # fmt: skip
    assert allowed.exit_code == 0, allowed.output
    last = json.loads((run_dir / "sessions.jsonl").read_text().splitlines()[-1])
    assert last["allowed_changes"][0].startswith("data arc/bb22: content changed")


def test_an_excluded_key_resumes_a_relevant_one_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    sets = ("model.spec=tiny", "arc.task_ids=[66e6c45b]", "ttt_data.nmax=2", "infer.max_new_tokens=4")
    assert _ttt(run_dir, *sets, limit=1).exit_code == 0
    assert _ttt(run_dir, *sets, "run.claim_timeout_s=60", "selftest.units=3").exit_code == 0
    refused = _ttt(run_dir, *sets, "train.epochs=5")
    assert refused.exit_code == 1 and "train.epochs: " in refused.output and "→ 5" in refused.output


def test_a_run_whose_every_unit_failed_takes_the_corrected_config(tmp_path: Path) -> None:
    """A run whose units all failed (say, on a hub model that could not be downloaded) has nothing to protect: the
    corrected command starts it afresh instead of being refused as a config change. The failed unit is a journal
    line written here (what a worker records for an infrastructure error): no hub can be reached in tests."""
    from runners.store import RunStore, UnitRecord

    run_dir = tmp_path / "run"
    assert _ttt(run_dir, "model.spec=tiny", "arc.task_ids=[66e6c45b]").exit_code == 0  # manifest, nothing run
    assert _ttt(run_dir, "model.spec=tiny:1", "arc.task_ids=[66e6c45b]").exit_code == 1  # nothing tried: refused
    store = RunStore(run_dir)
    store.journal("ttt").append(UnitRecord("66e6c45b", "error", "OSError: hub unreachable", None, 0.1))
    store.close()
    corrected = _ttt(run_dir, "model.spec=tiny:1", "arc.task_ids=[66e6c45b]", "train.epochs=3")
    assert corrected.exit_code == 0, corrected.output
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["config"]["model"]["spec"] == "tiny:1" and manifest["config"]["train"]["epochs"] == 3
    last = json.loads((run_dir / "sessions.jsonl").read_text().splitlines()[-1])
    assert any(line.startswith("train.epochs") for line in last["replaced_unused_config"])


@pytest.mark.parametrize("bad", ["lora.rank=0", "infer.batch_size=0", "infer.max_new_tokens=0"])
def test_a_value_out_of_range_is_refused_before_the_run_directory_and_the_fixed_command_runs(
    tmp_path: Path, bad: str
) -> None:
    run_dir = tmp_path / "run"
    refused = _ttt(run_dir, "model.spec=tiny", "arc.task_ids=[66e6c45b]", bad)
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert f"config key '{bad.split('=')[0]}': 0 is below its minimum, 1" in refused.output
    assert not run_dir.exists(), "a refused command left a run directory behind"
    fixed = _ttt(run_dir, "model.spec=tiny", "arc.task_ids=[66e6c45b]")  # not refused as a config change
    assert fixed.exit_code == 0, fixed.output


@pytest.mark.parametrize("bad", ["knowledge.lora.rank=0", "restem.batch_size=0", "knowledge.train.learning_rate=0"])
def test_a_knowledge_value_out_of_range_is_refused_before_any_stage_runs(tmp_path: Path, bad: str) -> None:
    run_dir = tmp_path / "run"
    args = ["knowledge", "rl", "demo", "--run-dir", str(run_dir), "--profile", "cpu", "--no-progress"]
    refused = CliRunner().invoke(main, [*args, "--set", "model.spec=tiny", "--set", bad])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert f"config key '{bad.split('=')[0]}'" in refused.output and "run again" not in refused.output
    assert not run_dir.exists()


@pytest.mark.parametrize("bad", ["train.max_len=-5", "lora.rank=-1", "infer.batch_size=0", "run.memory_budget_gib=-1"])
def test_plan_refuses_a_value_out_of_range_instead_of_planning_it(bad: str) -> None:
    result = CliRunner().invoke(main, ["plan", "arc_ttt_oracle", "--profile", "cpu", "--set", bad])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"config key '{bad.split('=')[0]}'" in result.output and "GiB" not in result.output


@pytest.mark.parametrize(
    ("option", "message"),
    [(["--limit", "-1"], "--limit -1: must be ≥ 0"), (["--only", "nosuchunit"], "unknown unit id(s) nosuchunit")],
)
def test_a_bad_run_option_is_refused_before_the_run_directory_is_touched(
    tmp_path: Path, option: list[str], message: str
) -> None:
    run_dir = tmp_path / "run"
    args = ["selftest", "--run-dir", str(run_dir), "--no-progress", "--set", "selftest.units=3"]
    refused = CliRunner().invoke(main, [*args, *option])
    assert refused.exit_code == 1 and message in refused.output and "Traceback" not in refused.output
    assert not run_dir.exists(), "a refused option left a run directory behind"
    assert CliRunner().invoke(main, [*args, "--only", "u00001"]).exit_code == 0  # a known unit still runs
