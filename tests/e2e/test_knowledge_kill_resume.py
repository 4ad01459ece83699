"""The knowledge loop and continual self-edits in real processes, SIGKILLed and resumed, with the tiny model: the
journals (and the merged weights) must equal an uninterrupted run's.

`seal knowledge rl`: killed mid-sampling, mid-inner-loop and mid-SFT (a checkpoint written, training not done).
`seal knowledge continual`: killed after some steps are recorded, in the middle of a later one; the resumed worker
reloads the base model and folds the recorded adapters again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.test_seal_loop_kill_resume import _journals, _recorded, _weights

REPO = Path(__file__).resolve().parents[2]
COMMON = ["--profile", "cpu", "--no-progress", "--set", "model.spec=tiny", "--set", "seal.max_new_tokens=24",
          "--set", "knowledge.answer_max_new_tokens=6"]  # fmt: skip
RL = [*COMMON, "--set", "knowledge.train.epochs=2", "--set", "restem.epochs=40", "--set", "restem.batch_size=1",
      "--set", "restem.grad_accum=1", "--set", "restem.save_every_steps=10",
      "--set", "seal.evaluate_final=false"]  # fmt: skip
CONTINUAL = [*COMMON, "--set", "knowledge.source=data/knowledge", "--set", "knowledge.shuffle_seed=null",
             "--set", "judge.spec=null", "--set", "continual.passages_per_sequence=3", "--set", "continual.sequences=1",
             "--set", "knowledge.train.epochs=6"]  # fmt: skip


def _run_killed(cmd: list[str], env: dict[str, str], triggers: list[Callable[[], bool]]) -> list[int]:
    fired = []
    for n, trigger in enumerate(triggers):
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None and not trigger():
            time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            fired.append(n)
        proc.wait()
    return fired


def test_the_knowledge_loop_killed_mid_sft_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    env = {**os.environ, "SEAL_CACHE": str(tmp_path / "cache")}

    def cmd(run_dir: Path) -> list[str]:
        return [sys.executable, "-m", "runners.cli", "knowledge", "rl", "demo", "--run-dir", str(run_dir), *RL]

    reference = tmp_path / "reference"
    done = subprocess.run(cmd(reference), cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = _journals(reference)
    assert expected["it0.sft"]["sft"]["result"]["steps"] == 40 * 2  # top-1 of 2 passages, 40 epochs, batch 1

    run_dir = tmp_path / "interrupted"

    def mid_sft() -> bool:
        checkpoints = any((run_dir / "work" / "it0.sft" / "sft").rglob("trainer_state.json"))
        return checkpoints and _recorded(run_dir, "it0.sft") == 0

    fired = _run_killed(
        cmd(run_dir),
        env,
        [lambda: _recorded(run_dir, "it0.sample") >= 1, lambda: _recorded(run_dir, "it0.inner") >= 2, mid_sft],
    )
    assert 2 in fired, f"no kill landed mid-SFT (kills at {fired})"
    resumed = subprocess.run(cmd(run_dir), cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _journals(run_dir) == expected
    reference_weights, resumed_weights = _weights(reference), _weights(run_dir)
    assert reference_weights.keys() == resumed_weights.keys()
    assert all(resumed_weights[name].equal(tensor) for name, tensor in reference_weights.items())


def test_continual_self_edits_killed_mid_sequence_resume_to_identical_results(tmp_path: Path) -> None:
    env = {**os.environ, "SEAL_CACHE": str(tmp_path / "cache")}

    def cmd(run_dir: Path) -> list[str]:
        return [sys.executable, "-m", "runners.cli", "knowledge", "continual", "--run-dir", str(run_dir), *CONTINUAL]

    reference = tmp_path / "reference"
    done = subprocess.run(cmd(reference), cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = _journals(reference)
    assert len(expected["continual"]) == 4

    run_dir = tmp_path / "interrupted"
    fired = _run_killed(
        cmd(run_dir),
        env,
        [lambda: _recorded(run_dir, "continual") >= 2, lambda: _recorded(run_dir, "continual") >= 3],
    )
    assert fired, "the runs ended before they could be killed"
    resumed = subprocess.run(cmd(run_dir), cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _journals(run_dir) == expected  # accuracies and NLL after every fold, bit for bit
    assert (run_dir / "report" / "continual_matrix.json").read_text() == (
        reference / "report" / "continual_matrix.json"
    ).read_text()
