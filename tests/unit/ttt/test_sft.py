"""The ReST-EM behaviour-cloning trainer: real TRL SFTTrainer runs on the tiny model, killed and resumed for real."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from ttt import cpu_features
from ttt.examples import IGNORE_INDEX, EncodedExample, encode_messages
from ttt.sft import (
    CHECKPOINTS,
    INPUTS_FILE,
    SftSettings,
    _save_scheduler,
    newest_complete_checkpoint,
    train_sft,
)

REPO = Path(__file__).resolve().parents[3]
QUESTIONS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("[[1, 2], [3, 4]] -> ", "[[4, 3], [2, 1]]#"),
    ("Rotate [[5, 6]]", "[[5], [6]]"),
    ("Answer directly: true or false?", "true"),
    ("Which colour permutation?", "rotate, flip, transpose"),
    ("Learning rate?", '{"learning_rate": 0.0001, "num_train_epochs": 2}'),
]
# Fast runs: a high learning rate so the adapter moves visibly in a few steps.
FAST = {"epochs": 2, "batch_size": 2, "lr": 1e-3}


def _rows(tokenizer: Any, count: int = 6) -> list[EncodedExample]:
    rows = []
    for question, answer in QUESTIONS[:count]:
        messages = [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
        rows.append(encode_messages(tokenizer, messages))
    return rows


def _adapter(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


def _assert_same_adapter(left: Path, right: Path) -> None:
    a, b = _adapter(left), _adapter(right)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a)


@torch.no_grad()
def _masked_loss(model: Any, rows: list[EncodedExample], *, all_tokens: bool = False) -> float:
    """Token-mean next-token cross-entropy over the rows' loss positions, one unpadded forward per row."""
    total, count = 0.0, 0
    for row in rows:
        logits = model(torch.tensor([row.input_ids])).logits[0, :-1].double()
        targets = torch.tensor(row.input_ids if all_tokens else row.labels)[1:]
        keep = targets != IGNORE_INDEX
        total += torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="sum").item()
        count += int(keep.sum())
    return total / count


# ------------------------------------------------------------------------------------------------------------------
# Loss, determinism, rows


def test_loss_counts_completion_tokens_only(tiny: tuple[Any, Any], tmp_path: Path) -> None:
    model, tokenizer = tiny
    # A random model predicts every token at about log(vocab): sharpen its head so that the tokens' losses differ
    # and a loss over the wrong tokens cannot pass for the right one.
    with torch.no_grad():
        model.lm_head.weight.mul_(30.0)
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    rows = _rows(tokenizer, 3)
    assert all(0 < row.num_loss_tokens < row.num_tokens - 1 for row in rows), "masks must be real"
    # One step over all rows: its loss is computed at the initial adapter (B = 0), i.e. by the base model.
    settings = SftSettings(epochs=1, batch_size=3, dtype="fp32")  # fp32-exact: not `auto`, bf16 on bf16 CPUs
    result = train_sft(str(tmp_path / "base"), tokenizer, rows, settings, tmp_path / "w")
    assert result.steps == 1 and len(result.losses) == 1
    completion_only = _masked_loss(model, rows)
    assert result.losses[0] == pytest.approx(completion_only, rel=1e-6)
    # The wrong candidates sit hundreds of tolerances away.
    tolerance = 1e-6 * completion_only
    assert abs(result.losses[0] - _masked_loss(model, rows, all_tokens=True)) > 100 * tolerance
    row_mean = sum(_masked_loss(model, [row]) for row in rows) / len(rows)
    assert abs(result.losses[0] - row_mean) > 100 * tolerance, "the loss is a mean over tokens, not over rows"


def test_same_inputs_and_seed_give_identical_losses_and_adapters(
    tiny_path: str, tiny_tokenizer: Any, tmp_path: Path
) -> None:
    rows = _rows(tiny_tokenizer)
    first = train_sft(tiny_path, tiny_tokenizer, rows, SftSettings(**FAST), tmp_path / "a")
    second = train_sft(tiny_path, tiny_tokenizer, rows, SftSettings(**FAST), tmp_path / "b")
    assert first.steps == 6 and len(first.losses) == 6 and len(first.learning_rates) == 6
    assert first.losses == second.losses
    assert first.learning_rates == second.learning_rates
    _assert_same_adapter(first.adapter_dir, second.adapter_dir)
    assert first.losses[-1] < first.losses[0], "a high learning rate must move the loss"
    assert first.resumed_from_step is None and first.precision == cpu_features.auto_dtype()  # `auto` on this CPU
    assert not (tmp_path / "a" / CHECKPOINTS).exists(), "checkpoints are removed once the adapter is written"
    other_seed = train_sft(tiny_path, tiny_tokenizer, rows, SftSettings(**FAST, seed=1), tmp_path / "c")
    assert other_seed.losses != first.losses


def test_too_long_rows_are_dropped_and_counted(tiny_path: str, tiny_tokenizer: Any, tmp_path: Path) -> None:
    rows = _rows(tiny_tokenizer, 3)
    limit = max(row.num_tokens for row in rows[:2])
    long_row = EncodedExample(rows[0].input_ids * 3, rows[0].labels * 3)
    no_loss = EncodedExample(rows[0].input_ids[:4], (IGNORE_INDEX,) * 4)
    settings = SftSettings(epochs=1, batch_size=2, max_len=limit)
    result = train_sft(tiny_path, tiny_tokenizer, [*rows[:2], long_row, no_loss], settings, tmp_path / "w")
    assert (result.rows_used, result.rows_dropped_too_long, result.rows_dropped_no_loss) == (2, 1, 1)
    assert result.steps == 1
    with pytest.raises(ValueError, match="no rows left"):
        train_sft(tiny_path, tiny_tokenizer, [long_row], settings, tmp_path / "x")
    with pytest.raises(ValueError, match="no rows"):
        train_sft(tiny_path, tiny_tokenizer, [], settings, tmp_path / "y")


# ------------------------------------------------------------------------------------------------------------------
# Checkpoints and resume


class _Crash(RuntimeError):
    pass


def _crash_at(step: int) -> Any:
    def progress(event: str, at: int) -> None:
        if event == "step" and at == step:
            raise _Crash(f"simulated crash at step {at}")

    return progress


def test_partial_checkpoints_are_skipped_and_resume_is_exact(
    tiny_path: str, tiny_tokenizer: Any, tmp_path: Path
) -> None:
    rows = _rows(tiny_tokenizer)
    settings = SftSettings(**{**FAST, "epochs": 4}, save_every_steps=3)  # 12 steps
    reference = train_sft(tiny_path, tiny_tokenizer, rows, settings, tmp_path / "reference")
    assert reference.checkpoint_steps == [3, 6, 9] and reference.checkpoint_interval_steps == 3

    work = tmp_path / "crashed"
    with pytest.raises(_Crash):
        train_sft(tiny_path, tiny_tokenizer, rows, settings, work, progress=_crash_at(8))
    checkpoints = work / CHECKPOINTS
    assert newest_complete_checkpoint(checkpoints) == checkpoints / "checkpoint-6"
    # What a kill during a save leaves: a newer folder without its state file, and one with a torn state file.
    shutil.copytree(checkpoints / "checkpoint-6", checkpoints / "checkpoint-9")
    (checkpoints / "checkpoint-9" / "trainer_state.json").unlink()
    shutil.copytree(checkpoints / "checkpoint-6", checkpoints / "checkpoint-10")
    state = (checkpoints / "checkpoint-10" / "trainer_state.json").read_text()
    (checkpoints / "checkpoint-10" / "trainer_state.json").write_text(state[: len(state) // 2])
    assert newest_complete_checkpoint(checkpoints) == checkpoints / "checkpoint-6"

    resumed = train_sft(tiny_path, tiny_tokenizer, rows, settings, work)
    assert resumed.resumed_from_step == 6
    assert resumed.checkpoint_steps == [9]
    assert resumed.losses == reference.losses and len(resumed.losses) == 12
    assert resumed.learning_rates == reference.learning_rates
    _assert_same_adapter(resumed.adapter_dir, reference.adapter_dir)


def test_checkpoints_of_other_inputs_are_refused(tiny_path: str, tiny_tokenizer: Any, tmp_path: Path) -> None:
    (tmp_path / CHECKPOINTS).mkdir()
    (tmp_path / CHECKPOINTS / INPUTS_FILE).write_text(json.dumps({"fingerprint": "someone else's"}))
    with pytest.raises(ValueError, match="different SFT run"):
        train_sft(tiny_path, tiny_tokenizer, _rows(tiny_tokenizer, 2), SftSettings(**FAST), tmp_path)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _State:
    def __init__(self, max_steps: int) -> None:
        self.global_step = 0
        self.max_steps = max_steps


class _Control:
    should_save = False


def test_adaptive_rule_spaces_saves_by_the_measured_save_cost(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Saves cost 1 s and steps 1 s: with a 10 % budget a save comes after the first step, then every 10 steps."""
    clock = _Clock()
    monkeypatch.setattr("ttt.sft.time.perf_counter", clock)
    scheduler = _save_scheduler(SftSettings(save_overhead=0.1), tmp_path, None, None)
    state, saved = _State(max_steps=40), []
    scheduler.on_train_begin(None, state, _Control())
    for _ in range(40):
        clock.now += 1.0
        state.global_step += 1
        control = _Control()
        scheduler.on_step_end(None, state, control)
        if control.should_save:
            clock.now += 1.0
            scheduler.on_save(None, state, control)
            saved.append(state.global_step)
    assert saved == [1, 11, 21, 31]
    assert scheduler.save_seconds == pytest.approx(4.0)


# ------------------------------------------------------------------------------------------------------------------
# A real process, really killed


def _spawn(spec: dict[str, Any], folder: Path) -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.json").write_text(json.dumps(spec))
    with open(folder / "stderr.txt", "ab") as stderr:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.sft_worker", str(folder / "spec.json")],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def _events(path: Path) -> list[dict[str, Any]]:
    events = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                pass  # torn by the kill
    return events


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_equals_uninterrupted_run(
    tiny_path: str, tiny_tokenizer: Any, tmp_path: Path
) -> None:
    rows = _rows(tiny_tokenizer)
    settings = {**FAST, "epochs": 12, "batch_size": 1, "save_every_steps": 5}  # 72 steps
    reference = train_sft(tiny_path, tiny_tokenizer, rows, SftSettings(**settings), tmp_path / "reference")
    work, progress = tmp_path / "killed", tmp_path / "progress.jsonl"
    spec = {
        "model_path": tiny_path,
        "rows": [[list(row.input_ids), list(row.labels)] for row in rows],
        "settings": settings,
        "work_dir": str(work),
        "progress": str(progress),
        "result": str(tmp_path / "result.json"),
    }
    proc = _spawn(spec, tmp_path)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        events = _events(progress)
        saves = [e["step"] for e in events if e["event"] == "save"]
        steps = [e["step"] for e in events if e["event"] == "step"]
        if saves and steps and steps[-1] >= saves[-1] + 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "stderr.txt").read_text()[-3000:]
    assert not (tmp_path / "result.json").exists()
    done_when_killed = max(e["step"] for e in _events(progress) if e["event"] == "step")
    assert done_when_killed < reference.steps

    proc = _spawn(spec, tmp_path)
    assert proc.wait(timeout=120) == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["resumed_from_step"] is not None and result["resumed_from_step"] >= 5
    assert 0 <= done_when_killed - result["resumed_from_step"] <= 5, "redid more than one checkpoint interval"
    assert result["losses"] == reference.losses and len(result["losses"]) == 72
    assert result["learning_rates"] == reference.learning_rates
    _assert_same_adapter(Path(result["adapter_dir"]), reference.adapter_dir)


# ------------------------------------------------------------------------------------------------------------------
# Settings


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("rank", 0),
        ("dropout", 1.0),
        ("targets", ()),
        ("epochs", 0),
        ("batch_size", 0),
        ("grad_accum", 0),
        ("lr", 0.0),
        ("schedule", "step"),
        ("warmup_steps", -1),
        ("weight_decay", -0.1),
        ("max_grad_norm", 0.0),
        ("dtype", "fp8"),
        ("save_overhead", 0.0),
        ("save_overhead", 1.5),
        ("save_every_steps", 0),
        ("max_len", 1),
    ],
)
def test_bad_settings_name_the_field(name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"SftSettings\.{name} "):
        SftSettings(**{name: value})


def test_defaults_are_seals_rest_em_step() -> None:
    settings = SftSettings()
    assert (settings.rank, settings.alpha, settings.dropout) == (16, 16.0, 0.0)
    assert settings.targets == ("q_proj", "v_proj", "gate_proj", "down_proj", "up_proj")
    assert (settings.epochs, settings.batch_size, settings.grad_accum, settings.lr) == (8, 5, 1, 5e-5)
    assert (settings.schedule, settings.warmup_steps, settings.weight_decay, settings.max_grad_norm) == (
        "cosine",
        0,
        0.0,
        1.0,
    )
    assert settings.save_overhead == 0.10 and settings.save_every_steps is None
