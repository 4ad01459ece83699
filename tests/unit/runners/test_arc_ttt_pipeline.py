"""`seal ttt run` in process with the tiny model: bad recipes and task lists stop before the run records its config,
chunks split the tasks, `run.keep_adapters=false` keeps nothing, and a task's views go out in one generate call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from runners.cli import main
from runners.config import ConfigError, load_config
from runners.pipelines.arc_ttt import recipe_from_config, stages
from runners.store import RunStore

SMALL = [
    "--profile", "cpu", "--no-progress",
    "--set", "model.spec=tiny",
    "--set", "arc.task_ids=[66e6c45b, c7d4e6ad]",
    "--set", "ttt_data.nmax=8",
    "--set", "infer.max_new_tokens=16",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _private_model_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path_factory.getbasetemp() / "seal-cache-pipeline"  # the tiny model is built once per session
    monkeypatch.setenv("SEAL_CACHE", str(cache))


def _run(run_dir: Path, *extra: str) -> Any:
    return CliRunner().invoke(main, ["ttt", "run", "demo", "--run-dir", str(run_dir), *SMALL, *extra])


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("arc.task_ids=[00000000]", ("arc:", "00000000")),
        ("arc.task_ids=[007bbfb7]", ("arc:", "007bbfb7", "training split")),  # a training task, split evaluation
        ("infer.transforms=[rot45]", ("infer:", "rot45")),
        ("ttt_data.leave_n=[0]", ("ttt_data:", "leave_n")),
        ("train.batch_size=0", ("train:", "batch_size")),
    ],
)
def test_what_the_loop_would_reject_stops_the_command_before_the_run_records_its_config(
    tmp_path: Path, override: str, needles: tuple[str, ...]
) -> None:
    result = _run(tmp_path / "run", "--set", override)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output
    # Nothing recorded: the corrected command starts this run directory afresh, without --allow-config-change.
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_split_both_reaches_training_and_evaluation_tasks() -> None:
    cfg = load_config("demo", "cpu", ["arc.split=both", "arc.task_ids=[007bbfb7, 66e6c45b]"])
    with pytest.raises(ConfigError, match="arc: .*007bbfb7.*'both'"):
        stages(load_config("demo", "cpu", ["arc.task_ids=[007bbfb7]"]), None)  # type: ignore[arg-type]
    assert [spec.units for spec in stages(cfg, None)] == [["007bbfb7", "66e6c45b"]]  # type: ignore[arg-type]


def test_chunks_split_the_tasks_and_adapters_can_be_left_unsaved(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = _run(run_dir, "--chunk", "1/2", "--set", "run.keep_adapters=false")
    assert first.exit_code == 0, first.output
    journal = run_dir / "stages" / "ttt" / "journal.jsonl"
    assert journal.read_text().count("\n") == 1
    second = _run(run_dir, "--chunk", "2/2", "--set", "run.keep_adapters=false")
    assert second.exit_code == 0, second.output
    records = RunStore.open(run_dir).records("ttt")
    assert sorted(records) == ["66e6c45b", "c7d4e6ad"]
    assert all(record.status == "ok" and "adapter" not in record.result for record in records.values())
    assert not list((run_dir / "artifacts").rglob("adapter_model.safetensors"))
    assert "| 66e6c45b |" in second.output  # the summary appears once every task is recorded


def test_every_view_of_every_test_input_goes_out_in_one_generate_call(tmp_path: Path) -> None:
    from runners.pipelines.arc_ttt import _tasks, load_worker_model
    from ttt.arc_ttt import run_task

    cfg = load_config("demo", "cpu", ["model.spec=tiny", "arc.task_ids=[e345f17b]", "ttt_data.nmax=4",
                                      "infer.max_new_tokens=8"])  # fmt: skip
    [subtasks] = _tasks(cfg).values()
    assert len(subtasks) == 2  # e345f17b has two test inputs
    _, tokenizer, slot, generator = load_worker_model(cfg)
    calls: list[int] = []
    real_generate = generator.generate

    def counting_generate(requests: Any) -> Any:  # a spy around the real generator, not a stand-in
        calls.append(len(requests))
        return real_generate(requests)

    generator.generate = counting_generate
    outcome = run_task(subtasks, slot, tokenizer, generator, recipe_from_config(cfg), seed=3).to_dict()
    assert len(calls) == 1
    assert calls[0] == sum(test["n_outputs"] for test in outcome["tests"]) and calls[0] > 2
