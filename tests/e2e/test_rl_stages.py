"""Barriers, frozen dynamic units, single-unit stages and work folders with real `seal run` processes (the test
pipeline in rl_pipeline.py), killed with SIGKILL where a kill is involved."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAUNCH = (
    "import sys, runners.pipelines as p; p.PIPELINES['rltest'] = 'tests.e2e.rl_pipeline';"
    "from runners.cli import main; sys.argv[0] = 'seal'; main()"
)


def _cmd(tmp_path: Path, run_dir: Path, *extra: str) -> list[str]:
    experiment = tmp_path / "rltest.yaml"
    experiment.write_text("pipeline: rltest\nselftest: {units: 2, iterations: 2000}\n")
    return [sys.executable, "-c", LAUNCH, "run", str(experiment), "--profile", "cpu", "--no-progress",
            "--run-dir", str(run_dir), *extra]  # fmt: skip


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def _run(tmp_path: Path, run_dir: Path, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _cmd(tmp_path, run_dir, *extra), cwd=REPO, env=_env(**env), capture_output=True, text=True, timeout=120
    )


def _lines(run_dir: Path, stage: str) -> list[dict]:
    path = run_dir / "stages" / stage / "journal.jsonl"
    return [json.loads(raw) for raw in path.read_text().splitlines()] if path.exists() else []


def test_a_later_stage_waits_for_the_other_chunk_with_exit_75_then_proceeds(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = _run(tmp_path, run_dir, "--chunk", "1/2")
    assert first.returncode == 75, first.stderr
    assert (
        "waiting: stage select needs inner: 2 of 4 units not recorded yet (chunk 2/2); run again when they are"
        in first.stderr
    )
    assert "Traceback" not in first.stderr and "Error" not in first.stderr
    assert {line["unit"] for line in _lines(run_dir, "inner")} == {"t0.k0", "t0.k1"}  # task t0 whole, in chunk 1
    assert not (run_dir / "stages" / "select").exists()

    second = _run(tmp_path, run_dir, "--chunk", "2/2")
    assert second.returncode == 0, second.stderr
    assert json.loads((run_dir / "stages" / "select" / "units.json").read_text()) == ["best-of-4"]
    [select] = _lines(run_dir, "select")
    assert select["unit"] == "best-of-4" and select["result"] == {"inner_ok": 4}
    assert select["config_hash"] and select["config_hash"] == _lines(run_dir, "inner")[0]["config_hash"]
    again = _run(tmp_path, run_dir, "--chunk", "1/2")  # everything recorded: nothing waits, nothing reruns
    assert again.returncode == 0 and len(_lines(run_dir, "select")) == 1 and "rltest: 4 inner units" in again.stdout


def test_exactly_one_of_two_concurrent_workers_processes_the_single_stage(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert _run(tmp_path, run_dir, RLTEST_SKIP_SELECT="1").returncode == 0  # inner recorded, select not started
    procs = [
        subprocess.Popen(_cmd(tmp_path, run_dir, "--chunk", f"{k}/2", "--only", "t1"), cwd=REPO,
                         env=_env(RLTEST_SELECT_SLEEP="1.5"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k in (1, 2)
    ]  # fmt: skip
    errs = []
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        errs.append(err)
    assert len(_lines(run_dir, "select")) == 1
    assert sum("stage select: 1 selected, 0 already recorded, processed 1" in err for err in errs) == 1, errs


def test_work_folder_survives_sigkill_mid_unit_and_is_removed_after_the_record(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    ckpt = run_dir / "work" / "inner" / "t0.k1" / "ckpt"
    proc = subprocess.Popen(
        _cmd(tmp_path, run_dir), cwd=REPO, env=_env(RLTEST_HANG_UNIT="t0.k1", RLTEST_SKIP_SELECT="1"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not ckpt.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert ckpt.exists(), "the hanging unit never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.read_text() == "half done" and "t0.k1" not in {line["unit"] for line in _lines(run_dir, "inner")}
    assert not (run_dir / "work" / "inner" / "t0.k0").exists()  # recorded before the kill: already cleaned up

    resumed = _run(tmp_path, run_dir, RLTEST_SKIP_SELECT="1")
    assert resumed.returncode == 0, resumed.stderr
    by_unit = {line["unit"]: line["result"] for line in _lines(run_dir, "inner")}
    assert by_unit["t0.k1"]["resumed"] is True and by_unit["t0.k0"]["resumed"] is False
    assert not (run_dir / "work" / "inner" / "t0.k1").exists()
