"""Shared pieces for the grading tests: a loopback Ollama, items, and a one-call grading helper."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from grading.bundle import Item
from grading.cache import JudgementCache
from grading.grade import GradeOutcome, GradeSettings, grade
from grading.judges import make_judge
from grading.report import rebuild_verdicts
from grading.rubrics import get_rubric
from tests.fixtures.ollama_server import FakeOllama

MODEL = "judge:1b"


@pytest.fixture
def server() -> Iterator[FakeOllama]:
    with FakeOllama(
        models=(MODEL, "other:1b", "contrarian:1b", "abstainer:1b"),
        personas={"contrarian:1b": "contrarian", "abstainer:1b": "abstainer"},
    ) as fake:
        yield fake


def qa_items(n: int, *, wrong_every: int = 3) -> list[Item]:
    """Item i is answered correctly unless i is a multiple of ``wrong_every``."""
    return [
        Item(
            f"q{i}",
            "qa",
            f"Question {i}?",
            (f"answer {i}",),
            "nonsense" if i % wrong_every == 0 else f"It is answer {i}.",
            {"unit": i},
        )
        for i in range(n)
    ]


def settings(**overrides: Any) -> GradeSettings:
    base: dict[str, Any] = {
        "rubric": get_rubric("seal-yesno"),
        "variance_sample": 0,
        "backoff_s": 0.01,
        "backoff_max_s": 0.02,
        "max_attempts": 3,
    }
    base.update(overrides)
    return GradeSettings(**base)


def run_grade(
    url: str,
    items: Sequence[Item],
    cache_path: Path,
    *,
    judges: Sequence[str] = (f"ollama:{MODEL}",),
    timeout: float = 5.0,
    stream: bool = False,
    log: Any = None,
    **overrides: Any,
) -> tuple[GradeOutcome, list[dict[str, Any]]]:
    async def go() -> GradeOutcome:
        made = [make_judge(spec, host=url, timeout=timeout, stream=stream) for spec in judges]
        try:
            with JudgementCache(cache_path) as cache:
                return await grade(items, made, settings(**overrides), cache, log=log)
        finally:
            for judge in made:
                await judge.aclose()

    outcome = asyncio.run(go())
    with JudgementCache(cache_path) as cache:
        return outcome, rebuild_verdicts(cache)


def vote(record: dict[str, Any], judge: str = f"ollama:{MODEL}") -> dict[str, Any]:
    return record["judges"][judge]
