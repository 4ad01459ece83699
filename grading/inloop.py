"""Judging inside a running loop: items in, one verdict per item out (not only counts).

The SEAL knowledge loop asks a judge about every answer right after each LoRA update, from several worker
processes at once. They share one SQLite judgement cache: this path reads and writes only its judgements table
(keyed by the full request, so identical questions are asked once across workers), never the run tables that
``grade()`` replaces at its start, so one worker never wipes another's rows. The retries, back-off, parse retries and
"judge down" logic are ``grade``'s own (``grading.grade._Run``).

A verdict is the panel's: the rubric's label (``correct``, ``incorrect``, …) or None when unscored (the judge was
down, busy, timed out, or its replies did not parse or were cut): an infrastructure failure is never a wrong answer.
An empty answer gets the rubric's rule without a call. A judge that fails its preflight raises ``JudgeError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from grading.bundle import Item, item_from_json
from grading.cache import JudgementCache
from grading.grade import GradeSettings, _JudgeState, _Run, plan_run, preflight_all
from grading.judges import Judge, make_judge
from grading.report import UNSCORED, panel_verdict
from grading.rubrics import get_rubric


@dataclass(frozen=True)
class ItemVerdict:
    verdict: str | None  # the panel's label, or None: unscored
    votes: dict[str, dict[str, Any]] = field(default_factory=dict)  # judge → {status, verdict, reason}
    reason: str | None = None  # why it is unscored

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "votes": self.votes, "reason": self.reason}


async def judge_items(
    items: Sequence[Item], judges: Sequence[Judge], settings: GradeSettings, cache: JudgementCache
) -> dict[str, ItemVerdict]:
    """The verdict of every QA item (ARC items are decided by their metrics and are not returned)."""
    settings = replace(settings, variance_sample=0)  # in the loop one vote per item and judge
    infos = await preflight_all(judges, settings)
    _, plan, jobs = plan_run(items, infos, settings)
    cached = set() if settings.rescore else cache.lookup(jobs)
    failures: dict[tuple[str, str], str] = {}

    def on_failure(item_id: str, judge: str, vote: int, reason: str) -> None:
        failures[(item_id, judge)] = reason

    states = [_JudgeState(judge, info) for judge, info in zip(judges, infos)]
    run = _Run(cache, settings, states, None, on_failure=on_failure)
    pending = [job for key, job in jobs.items() if key not in cached]
    run.total = len(pending)
    workers = []
    for index, state in enumerate(states):
        queue = iter([job for job in pending if job.judge == index])
        workers.extend(run.worker(state, queue) for _ in range(settings.concurrency))
    await asyncio.gather(*workers)

    stored = cache.judgements_by_key(row.key for row in plan if row.key is not None)
    votes: dict[str, dict[str, dict[str, Any]]] = {}
    for row in plan:
        if row.key is None:
            vote = {"status": "rule", "verdict": row.rule_verdict, "reason": "empty answer: decided without a call"}
        elif row.key in stored:
            vote = stored[row.key]
        else:
            reason = failures.get((row.item_id, row.judge), "not judged")
            vote = {"status": "failed", "verdict": None, "reason": reason}
        votes.setdefault(row.item_id, {})[row.judge] = vote
    out = {}
    for item in items:
        if item.kind != "qa":
            continue
        mine = votes.get(item.item_id, {})
        label = panel_verdict(list(mine.values())) if mine else UNSCORED
        if label in (UNSCORED, "disagree") or not mine:
            reasons = "; ".join(f"{j}: {v.get('reason')}" for j, v in mine.items() if v.get("verdict") is None)
            out[item.item_id] = ItemVerdict(None, mine, reasons or label)
        else:
            out[item.item_id] = ItemVerdict(label, mine)
    return out


def judge_items_sync(
    items: Sequence[Item | Mapping[str, Any]],
    judge_specs: Sequence[str],
    cache_path: str | Path,
    *,
    rubric: str = "seal-yesno",
    mode: str = "structured",
    host: str | None = None,
    concurrency: int = 1,
    timeout: float = 120.0,
    retries: int = 5,
    seed: int = 7,
) -> dict[str, ItemVerdict]:
    """`judge_items` for synchronous callers: items as `Item`s or bundle dicts, judges by spec (as `seal grade
    --judge` takes them), the cache at `cache_path` (created when missing, shared with other processes)."""
    parsed = [item if isinstance(item, Item) else item_from_json(dict(item)) for item in items]
    settings = GradeSettings(
        rubric=get_rubric(rubric), mode=mode, concurrency=concurrency, seed=seed, max_attempts=retries
    )

    async def go() -> dict[str, ItemVerdict]:
        judges = [make_judge(spec, host=host, timeout=timeout, host_option="judge.host") for spec in judge_specs]
        try:
            with JudgementCache(cache_path) as cache:
                return await judge_items(parsed, judges, settings, cache)
        finally:
            for judge in judges:
                await judge.aclose()

    return asyncio.run(go())


def check_judges_sync(
    judge_specs: Sequence[str],
    *,
    host: str | None = None,
    timeout: float = 120.0,
    retries: int = 3,
    rubric: str = "seal-yesno",
) -> None:
    """The judges' preflight alone (version, model, warm-up: what `seal grade` checks before grading), for a loop
    that wants to know the judge answers before its first stage that needs it. Raises ``JudgeError``."""
    settings = GradeSettings(rubric=get_rubric(rubric), max_attempts=max(1, retries))

    async def go() -> None:
        judges = [make_judge(spec, host=host, timeout=timeout) for spec in judge_specs]
        try:
            await preflight_all(judges, settings)
        finally:
            for judge in judges:
                await judge.aclose()

    asyncio.run(go())
