"""The SEAL loop end to end (`seal arc rl`) on two real ARC tasks with the tiny model, in real processes:
SIGKILLed several times at moments spread over every stage, mid-SFT included, then resumed; the journals and the
merged weights must equal an uninterrupted run's.

The tiny random model never solves a task, so these runs clone every scored self-edit (a threshold of 0; SEAL's
rule for unusable ones), which exercises selection, SFT with checkpoints, merging and iteration 1 sampling from the
merged model; no step cap, so every self-edit trains.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
ARGS = [
    "--profile", "cpu", "--no-progress",
    "--set", "model.spec=tiny",
    "--set", "ttt_data.nmax=8",
    "--set", "train.max_steps_cap=null",
    "--set", "infer.max_new_tokens=8",
    "--set", "seal.max_new_tokens=24",
    "--set", "seal.invalid=train_zero_epochs",
    "--set", "seal.select=threshold",
    "--set", "seal.threshold=0.0",
    "--set", "restem.epochs=30",
    "--set", "restem.batch_size=1",
    "--set", "restem.save_every_steps=10",
]  # fmt: skip
# Wall-clock figures differ between runs; everything else must not.
VOLATILE = {"timings", "seconds", "train_seconds", "save_seconds", "peak_memory_bytes", "peak_memory_kind", "t",
            "resumed_from_step", "checkpoints_saved"}  # fmt: skip
STAGES = ["it0.sample", "it0.base", "it0.inner", "it0.select", "it0.sft", "it0.merge", "it1.sample", "it1.base",
          "it1.inner"]  # fmt: skip


def _cmd(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "runners.cli", "arc", "rl", "demo_arc", "--run-dir", str(run_dir), *ARGS]


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _journals(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Every stage's latest line per unit, wall-clock fields removed."""
    out: dict[str, dict[str, Any]] = {}
    for journal in sorted((run_dir / "stages").glob("*/journal*.jsonl")):
        for raw in journal.read_text().splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue  # a line torn by a kill
            keep = {k: line.get(k) for k in ("status", "reason", "result", "artifacts")}
            out.setdefault(journal.parent.name, {})[line["unit"]] = _strip(keep)
    return out


def _weights(run_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    folder = run_dir / "artifacts" / "it0.merge" / "merge" / "model"
    tensors: dict[str, Any] = {}
    for path in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(str(path)))
    return tensors


def _recorded(run_dir: Path, stage: str) -> int:
    total = 0
    for journal in (run_dir / "stages" / stage).glob("journal*.jsonl"):
        total += journal.read_text().count('"end":true}')
    return total


def _checkpoint_exists(run_dir: Path) -> bool:
    return any((run_dir / "work" / "it0.sft" / "sft").rglob("trainer_state.json"))


def test_seal_iteration_killed_at_every_stage_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    env = {**os.environ, "SEAL_CACHE": str(tmp_path / "cache")}
    reference = tmp_path / "reference"
    done = subprocess.run(_cmd(reference), cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = _journals(reference)
    assert set(expected) >= set(STAGES)
    sft = expected["it0.sft"]["sft"]["result"]
    assert sft["steps"] == 30 * 4 and not sft["carried_forward"]  # 2 tasks x 2 self-edits cloned, 30 epochs
    assert expected["it0.merge"]["merge"]["artifacts"] == {"model": "artifacts/it0.merge/merge/model"}
    assert "SEAL on ARC" in done.stdout

    run_dir = tmp_path / "interrupted"
    rng = random.Random(7)
    # One kill inside each phase: sampling, the inner loops, mid-SFT (a checkpoint written, training not done),
    # and iteration 1; plus a kill after a random delay.
    triggers = [
        lambda: _recorded(run_dir, "it0.sample") >= 1,
        lambda: _recorded(run_dir, "it0.inner") >= rng.randint(1, 3),
        lambda: _checkpoint_exists(run_dir) and _recorded(run_dir, "it0.sft") == 0,
        lambda: _recorded(run_dir, "it1.sample") >= 1,
    ]
    kills, killed_mid_sft, fired = 0, False, []
    for n, trigger in enumerate(triggers):
        proc = subprocess.Popen(_cmd(run_dir), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None and not trigger():
            time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
            killed_mid_sft = killed_mid_sft or n == 2
            fired.append(n)
        proc.wait()
    assert kills >= 3, f"the runs ended before they could be killed (kills landed at triggers {fired})"
    resumed = subprocess.run(_cmd(run_dir), cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    got = _journals(run_dir)
    assert got == expected
    assert killed_mid_sft, "no kill landed mid-SFT"
    sft_line = json.loads((run_dir / "stages" / "it0.sft" / "journal.jsonl").read_text().splitlines()[-1])
    assert sft_line["result"]["resumed_from_step"]  # it resumed from a checkpoint, not from scratch
    assert sft_line["result"]["losses"] == sft["losses"]
    reference_weights, resumed_weights = _weights(reference), _weights(run_dir)
    assert reference_weights.keys() == resumed_weights.keys()
    for name, tensor in reference_weights.items():
        assert resumed_weights[name].equal(tensor), name
    assert not (run_dir / "work" / "it0.sft").exists() or not any((run_dir / "work" / "it0.sft").iterdir())
