"""`seal ttt run` end to end on two real ARC tasks with the tiny model: SIGKILLed mid-run, resumed, and ending
with the same results as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ARGS = [
    "--profile", "cpu", "--no-progress",
    "--set", "model.spec=tiny",
    "--set", "arc.task_ids=[66e6c45b, c7d4e6ad]",
    "--set", "ttt_data.nmax=48",
    "--set", "infer.max_new_tokens=48",
    "--set", "run.keep_adapters=true",
]  # fmt: skip
VOLATILE = {"timings", "train"}  # wall-clock figures differ between runs; everything else must not


def _cmd(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "runners.cli", "ttt", "run", "demo_ttt", "--run-dir", str(run_dir), *ARGS]


def _results(run_dir: Path) -> dict[str, dict]:
    out = {}
    for raw in (run_dir / "stages" / "ttt" / "journal.jsonl").read_text().splitlines():
        line = json.loads(raw)
        result = {k: v for k, v in line["result"].items() if k not in VOLATILE}
        result["train_steps"] = line["result"]["train"]["steps"]
        result["train_loss_last"] = round(line["result"]["train"]["loss_last"], 5)
        out[line["unit"]] = {"status": line["status"], **result}
    return out


def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path: Path) -> None:
    env = {**os.environ, "SEAL_CACHE": str(tmp_path / "cache")}
    reference = tmp_path / "reference"
    done = subprocess.run(_cmd(reference), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "66e6c45b" in done.stdout and "solved" in done.stdout  # the summary table
    expected = _results(reference)
    assert set(expected) == {"66e6c45b", "c7d4e6ad"}

    run_dir = tmp_path / "interrupted"
    journal = run_dir / "stages" / "ttt" / "journal.jsonl"
    proc = subprocess.Popen(_cmd(run_dir), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_text().count("\n") >= 1:
            break  # the first task is recorded; the second is in flight
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(_results(run_dir)) == 1

    resumed = subprocess.run(_cmd(run_dir), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "1 already recorded, processed 1" in resumed.stderr
    assert _results(run_dir) == expected
    for task in expected:  # adapters kept, complete, and no partial folder left behind
        assert (run_dir / "artifacts" / "ttt" / task / "adapter" / "adapter_model.safetensors").exists()
    assert not [p for p in (run_dir / "artifacts" / "ttt").iterdir() if p.name.startswith(".")]

    # The run exports as a grading bundle that the grading package reads back, gold grids included.
    from grading.bundle import read_bundle

    bundle = tmp_path / "bundle.jsonl"
    exported = subprocess.run(
        [sys.executable, "-m", "runners.cli", "export", str(run_dir), "--out", str(bundle)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    items = {item.item_id: item for item in read_bundle(bundle)}
    assert set(items) == {"66e6c45b-0", "c7d4e6ad-0"}
    assert items["66e6c45b-0"].kind == "arc" and items["66e6c45b-0"].gold
    for task, result in expected.items():  # the outputs behind the attempts travel too, unparseable ones included
        test = result["tests"][0]
        assert items[f"{task}-0"].outputs == {"total": test["n_outputs"], "unparseable": test["n_unparseable"]}
