"""Real worker processes, really killed with SIGKILL, resumed until done: nothing lost, nothing done twice."""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

SELFTEST = [sys.executable, "-m", "runners.cli", "selftest", "--profile", "cpu", "--no-progress"]
REPO = Path(__file__).resolve().parents[2]


def _run(run_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SELFTEST, "--run-dir", str(run_dir), *extra], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def _journal_lines(run_dir: Path) -> list[dict]:
    lines = []
    for path in sorted((run_dir / "stages" / "hash").glob("journal*.jsonl")):
        for raw in path.read_text().splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue  # a line torn by SIGKILL: the store ignores it too
    return lines


def test_sigkill_at_random_moments_then_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    units = ["--set", "selftest.units=300", "--set", "selftest.iterations=60000"]
    reference = tmp_path / "reference"
    started = time.monotonic()
    assert _run(reference, *units).returncode == 0
    uninterrupted_s = time.monotonic() - started
    expected = {line["unit"]: line["result"] for line in _journal_lines(reference)}
    assert len(expected) == 300

    interrupted = tmp_path / "interrupted"
    rng = random.Random(20261121)
    kills = 0
    for _ in range(4):
        proc = subprocess.Popen(
            [*SELFTEST, "--run-dir", str(interrupted), *units], cwd=REPO, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        # Once this process records its first unit (start-up takes longer on a busy machine), kill it somewhere in
        # the next fifth of a full run's time, so four kills cannot finish the stage.
        before = len(_journal_lines(interrupted)) if interrupted.exists() else 0
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if interrupted.exists() and len(_journal_lines(interrupted)) > before:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, max(0.1, 0.2 * uninterrupted_s)))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    partial = {line["unit"] for line in _journal_lines(interrupted)}
    assert kills >= 3 and 0 < len(partial) < 300, f"the kills did not interrupt the stage ({len(partial)} done)"

    final = _run(interrupted, *units)
    assert final.returncode == 0, final.stderr
    lines = _journal_lines(interrupted)
    counts = collections.Counter(line["unit"] for line in lines)
    assert set(counts) == set(expected), "units lost"
    assert max(counts.values()) == 1, f"units recorded twice: {[u for u, c in counts.items() if c > 1]}"
    assert {line["unit"]: line["result"] for line in lines} == expected
    assert not list((interrupted / "claims" / "hash").glob("*.lock")), "claims left behind"


def test_two_workers_on_one_run_directory_share_the_work(tmp_path: Path) -> None:
    run_dir = tmp_path / "shared"
    args = ["--set", "selftest.units=400", "--set", "selftest.iterations=30000"]
    # Create the manifest first so both workers resume the same run from their first instant.
    assert _run(run_dir, *args, "--limit", "0").returncode == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([*SELFTEST, "--run-dir", str(run_dir), *args], cwd=REPO, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    lines = _journal_lines(run_dir)
    counts = collections.Counter(line["unit"] for line in lines)
    assert len(counts) == 400 and max(counts.values()) == 1
    by_worker = collections.Counter(line["worker"] for line in lines)
    assert len(by_worker) == 2, f"one worker did everything: {by_worker}"
