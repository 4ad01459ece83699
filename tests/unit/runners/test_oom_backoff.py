"""Out of memory inside a unit: the attempt's memory is freed, the batch halves (then the context), the unit is
retried, and its journal line says so; past the limit the unit is an error that says what to change.

CUDA cannot run here, so the error is injected: the training loop's loss function raises torch's own
OutOfMemoryError (what CUDA raises) whenever it is handed more than one sequence at once. Everything else (the
stage runner, the training loop's micro-batch split, the journal) is the real code path on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

import ttt.train
from runners.cli import main
from runners.stage import Outcome, _process_one
from ttt import memory

SMALL = [
    "--profile", "cpu", "--no-progress",
    "--set", "model.spec=tiny",
    "--set", "arc.task_ids=[66e6c45b]",
    "--set", "ttt_data.nmax=6",
    "--set", "infer.max_new_tokens=8",
    "--set", "train.packing=packed",
    "--set", "train.batch_size=2",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _private_model_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEAL_CACHE", str(tmp_path_factory.getbasetemp() / "seal-cache-pipeline"))


def _run(run_dir: Path, *extra: str) -> Any:
    return CliRunner().invoke(main, ["ttt", "run", "demo_ttt", "--run-dir", str(run_dir), *SMALL, *extra])


def _line(run_dir: Path) -> dict[str, Any]:
    lines = (run_dir / "stages" / "ttt" / "journal.jsonl").read_text().splitlines()
    return json.loads(lines[-1])


def _one_sequence_at_a_time(monkeypatch: pytest.MonkeyPatch, always: bool = False) -> list[int]:
    real = ttt.train.packed_loss_sum
    seen: list[int] = []

    def loss(model: Any, batch: Any) -> torch.Tensor:
        sequences = int((batch.position_ids == 0).sum())
        seen.append(sequences)
        if sequences > 1 or always:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected by the test)")
        return real(model, batch)

    monkeypatch.setattr(ttt.train, "packed_loss_sum", loss)
    return seen


def test_the_batch_halves_and_the_unit_trains_the_same_update(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = _run(tmp_path / "reference")
    assert reference.exit_code == 0, reference.output
    expected = _line(tmp_path / "reference")["result"]
    assert "oom_backoff" not in expected

    seen = _one_sequence_at_a_time(monkeypatch)
    result = _run(tmp_path / "run")
    assert result.exit_code == 0, result.output
    line = _line(tmp_path / "run")
    assert line["status"] == "ok"
    backoff = line["result"]["oom_backoff"]
    assert backoff["batch_divisor"] == 2 and backoff["context_divisor"] == 1
    assert [e["then"] for e in backoff["events"]] == ["batch ÷2 (the last batch had 2 rows)"]
    assert "CUDA out of memory" in backoff["events"][0]["error"]
    assert max(seen) == 2 and seen[-1] == 1  # it ran two sequences at once, failed, then one at a time
    # Same examples, same optimizer steps: each step's two passes accumulate to the update one pass would make.
    got, want = line["result"]["train"], expected["train"]
    assert got["steps"] == want["steps"] and got["examples"] == want["examples"]
    assert got["loss_last"] == pytest.approx(want["loss_last"], rel=1e-4)


def test_past_the_limit_the_unit_is_an_error_that_says_what_to_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _one_sequence_at_a_time(monkeypatch, always=True)
    result = _run(tmp_path / "run", "--set", "run.oom_retries=2")
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = _line(tmp_path / "run")
    assert line["status"] == "error"
    assert line["reason"].startswith("out of memory after 2 back-off(s) (batch ÷2 (the last batch had 2 rows); ")
    assert "context ÷2" in line["reason"] and "To fix: lower the batch (train.batch_size" in line["reason"]
    memory_log = list((tmp_path / "run" / "logs").glob("memory-*.jsonl"))
    assert memory_log == [] or all(p.stat().st_size > 0 for p in memory_log)


def test_each_training_step_logs_its_memory(tmp_path: Path) -> None:
    result = _run(tmp_path / "run")
    assert result.exit_code == 0, result.output
    steps = _line(tmp_path / "run")["result"]["train"]["steps"]
    (log,) = (tmp_path / "run" / "logs").glob("memory-*.jsonl")
    lines = [json.loads(raw) for raw in log.read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, steps + 1))
    assert all(line["stage"] == "ttt" and line["unit"] == "66e6c45b" and line["rss"] > 0 for line in lines)
    assert all(line["batch_divisor"] == 1 for line in lines)


def test_the_ladder_halves_the_batch_while_it_can_then_the_context() -> None:
    memory.reset_backoff()
    attempts: list[tuple[int, int]] = []

    def processor(unit: str) -> Outcome:
        state = memory.backoff()
        attempts.append((state.batch_divisor, state.context_divisor))
        memory.note_batch(memory.micro_batch(4))
        if memory.context_limit(1000) > 250:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return Outcome("ok", {"answer": 42})

    record = _process_one(processor, "u", "w", None, oom_retries=5)
    assert record.status == "ok" and record.result["answer"] == 42
    assert attempts == [(1, 1), (2, 1), (4, 1), (4, 2), (4, 4)]  # batch 4 → 2 → 1 row, then the context
    assert record.result["oom_backoff"]["batch_divisor"] == 4 and record.result["oom_backoff"]["context_divisor"] == 4
    later = _process_one(lambda unit: Outcome("ok", {}), "v", "w", None)  # the stage keeps the smaller size
    assert later.result["oom_backoff"] == {"batch_divisor": 4, "context_divisor": 4, "events": []}
    memory.reset_backoff()
    assert "oom_backoff" not in _process_one(lambda unit: Outcome("ok", {}), "x", "w", None).result


def test_other_errors_are_not_retried() -> None:
    memory.reset_backoff()
    calls = []

    def processor(unit: str) -> Outcome:
        calls.append(unit)
        raise ValueError("a bug, not memory")

    record = _process_one(processor, "u", "w", None)
    assert record.status == "error" and record.reason == "ValueError: a bug, not memory" and calls == ["u"]
    assert memory.is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB"))
    assert not memory.is_out_of_memory(RuntimeError("shape mismatch"))
