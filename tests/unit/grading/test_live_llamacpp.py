"""Against the real llama.cpp server (llama-cpp-python) with SmolLM2-135M-Instruct; skipped when either is absent.

``make test-live`` installs ``llama-cpp-python[server]`` (a CPU build, minutes) and runs the ``live`` tests. The
judge is the ``openai-compat:`` back-end, the grading path is the real ``seal grade`` command in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from grading.bundle import Item, write_bundle
from grading.report import read_verdicts
from tests.fixtures.llamacpp_server import LlamaCppServer, missing

pytestmark = pytest.mark.live

REPO = Path(__file__).resolve().parents[3]
# A wrong verdict is the judge's business; these are not: the server was up, so nothing may end as "failed".
INFRASTRUCTURE = ("failed", "pending")

ITEMS = [
    Item("paris", "qa", "What is the capital of France?", ("Paris",), "The capital of France is Paris.", {}),
    Item("lyon", "qa", "What is the capital of France?", ("Paris",), "Lyon", {}),
    Item("broncos", "qa", "Which NFL team won Super Bowl 50?", ("Denver Broncos",), "the Denver Broncos", {}),
    Item("panthers", "qa", "Which NFL team won Super Bowl 50?", ("Denver Broncos",), "Carolina Panthers", {}),
    Item("gold", "qa", "What color emphasized the 50th anniversary?", ("gold",), "gold", {}),
    Item("empty", "qa", "Where did Super Bowl 50 take place?", ("Santa Clara, California",), "", {}),
]


def _seal_grade(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runners.cli", "grade", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _verdicts(out: Path, judge: str) -> dict[str, dict[str, Any]]:
    _, records = read_verdicts(out / "verdicts.jsonl")
    return {r["item_id"]: r["judges"][judge] for r in records}


@pytest.fixture(scope="module")
def server() -> Any:
    reason = missing()
    if reason:
        pytest.skip(reason)
    with LlamaCppServer() as live:
        yield live
    live.remove_log()


def test_live_llamacpp_grades_resumes_and_keeps_failures_apart(server: LlamaCppServer, tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "export.jsonl", ITEMS, {"run_id": "live-llamacpp"})
    out = tmp_path / "grades"
    judge = server.judge_spec
    common = [str(bundle), "--judge", judge, "--out", str(out), "--variance-sample", "0", "--quiet"]
    common += ["--timeout", "120", "--retries", "3", "--backoff", "0.2", "--allow-unscored"]

    before = server.chat_requests()
    first = _seal_grade(*common)
    assert first.returncode == 0, first.stderr + server.log_tail()
    report = json.loads((out / "report.json").read_text())
    info = report["judges"][0]
    assert info["backend"] == "openai-compat" and info["model"] == server.model

    votes = _verdicts(out, judge)
    assert set(votes) == {item.item_id for item in ITEMS}
    assert votes["empty"]["status"] == "rule"  # an empty answer costs no call
    for item_id, vote in votes.items():
        # Down, refused or timed-out requests are infrastructure: they must not hide among the wrong answers.
        assert vote["status"] not in INFRASTRUCTURE, f"{item_id}: {vote['reason']}\n{server.log_tail()}"
        # SmolLM2 may misjudge; it may not crash, and an unscored verdict says why.
        assert vote["status"] in ("scored", "rule", "unparseable", "truncated"), vote
        assert vote["status"] in ("scored", "rule") or vote["reason"], vote
        if vote["status"] in ("unparseable", "truncated"):
            assert vote["verdict"] is None  # never counted as wrong
    unscored = sum(v["status"] not in ("scored", "rule") for v in votes.values())
    assert report["unscored"]["items"] == unscored
    summary = report["overall"]["qa"]["judges"][judge]
    assert summary["n"] == len(ITEMS)
    assert summary["scored"] == len(ITEMS) - unscored  # accuracy's denominator holds scored votes only
    assert summary["failed_rate"] == 0.0
    sent = report["throughput"]["requests_sent"]
    assert sent >= len(ITEMS) - 1  # five calls at least, more when a reply needed a parse retry
    assert server.chat_requests() - before == sent  # the server saw exactly what the harness counted

    # The same command again: everything comes from the cache, the server is not asked.
    asked = server.chat_requests()
    again = _seal_grade(*common)
    assert again.returncode == 0, again.stderr
    resumed = json.loads((out / "report.json").read_text())
    assert resumed["throughput"]["requests_sent"] == 0
    assert resumed["throughput"]["cached"] == len(ITEMS) - 1
    assert server.chat_requests() == asked
    assert _verdicts(out, judge) == votes

    # With the server gone, a re-score stops at the preflight (exit 1) and keeps what was graded.
    server.close()
    down = _seal_grade(*common, "--rescore")
    assert down.returncode == 1 and "judge unavailable" in down.stderr, down.stderr
    assert _verdicts(out, judge) == votes
