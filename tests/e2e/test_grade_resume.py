"""A grading run SIGKILLed mid-way and restarted sends no request twice for an item already answered.

The grading CLI runs as a real subprocess against the loopback Ollama in this process, which records every
request. After the kill, the cache says which requests were committed; after the restart, none of those may
reach the server again, and only the requests in flight at the kill (at most ``--concurrency``) may repeat.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from grading.bundle import Item, write_bundle
from grading.report import read_verdicts
from tests.fixtures.ollama_server import FakeOllama

REPO = Path(__file__).resolve().parents[2]
MODEL = "judge:1b"
ITEMS, SAMPLE, CONCURRENCY = 80, 10, 2


def _identity(user_message: str, options: dict) -> tuple[str, int]:
    return user_message, int(options["seed"])


def _committed(cache: Path) -> set[tuple[str, int]]:
    with sqlite3.connect(cache) as db:
        rows = [json.loads(r[0]) for r in db.execute("SELECT request FROM judgements")]
    return {_identity(r["messages"][-1]["content"], r["options"]) for r in rows}


def test_kill_and_resume_sends_no_answered_request_twice(tmp_path: Path) -> None:
    items = [
        Item(f"q{i}", "qa", f"Question {i}?", (f"answer {i}",), f"answer {i}" if i % 4 else "no idea", {"unit": i})
        for i in range(ITEMS)
    ]
    bundle = write_bundle(tmp_path / "export.jsonl", items, {"run_id": "e2e"})
    out = tmp_path / "graded"
    with FakeOllama(latency_s=0.03, slots=CONCURRENCY) as server:
        command = [
            sys.executable,
            "-m",
            "runners.cli.grade",
            str(bundle),
            "--judge",
            f"ollama:{MODEL}",
            "--host",
            server.url,
            "--out",
            str(out),
            "--concurrency",
            str(CONCURRENCY),
            "--variance-sample",
            str(SAMPLE),
            "--quiet",
        ]
        first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while len(server.chat_records()) < 30:
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            assert time.monotonic() < deadline, "the grading run never got going"
            time.sleep(0.005)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        assert first.returncode == -signal.SIGKILL
        before = len(server.chat_records())
        committed = _committed(out / "cache.sqlite")
        assert 0 < len(committed) < ITEMS + SAMPLE

        second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        records = server.chat_records()

    after = [_identity(r.user_message, r.body["options"]) for r in records[before:]]
    assert not committed.intersection(after), "a committed verdict was asked for again"
    every = Counter(_identity(r.user_message, r.body["options"]) for r in records)
    assert len(every) == ITEMS + SAMPLE  # everything was asked for ...
    repeated = [key for key, count in every.items() if count > 1]
    assert len(repeated) <= CONCURRENCY  # ... and only what was in flight at the kill was asked twice
    _, verdicts = read_verdicts(out / "verdicts.jsonl")
    assert len(verdicts) == ITEMS
    assert all(v["judges"][f"ollama:{MODEL}"]["status"] == "scored" for v in verdicts)
    assert json.loads((out / "report.json").read_text())["complete"] is True
