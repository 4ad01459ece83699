"""The grading loop: deterministic metrics, judge preflight, cached and concurrent judge calls, panel votes.

``grade()`` never turns an infrastructure failure into a wrong answer: a request that keeps failing (busy,
down, timing out) leaves its item *unscored* with the reason, a judge that stays down (``down_after`` items in
a row gave up, or one fatal error such as a missing model) stops being asked and everything it did not grade
is recorded as unscored, and whatever was graded stays in the cache. A reply that does not parse is re-asked
at most ``parse_retries`` times (with a little temperature, so the retry can differ) and is then unscored; a
reply cut by ``num_predict`` (``done_reason == "length"``) is unscored at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from grading.bundle import Item
from grading.cache import Judgement, JudgementCache, PlanRow, judgement_key
from grading.judges import FatalJudgeError, Judge, JudgeInfo, JudgeReply, JudgeRequest, TransientJudgeError
from grading.metrics import arc_metrics, qa_metrics
from grading.rubrics import MODES, Rubric

DEFAULT_NUM_PREDICT = {"structured": 48, "cot": 512, "strict": 64}
RETRY_TEMPERATURE = 0.3


@dataclass(frozen=True)
class GradeSettings:
    rubric: Rubric
    mode: str = "structured"  # "structured" | "cot" | "strict" (SEAL's yes-and-not-no rule)
    concurrency: int = 1  # requests in flight per judge; Ollama serves one at a time unless OLLAMA_NUM_PARALLEL
    seed: int = 7
    num_ctx: int = 2048  # constant: changing it between calls makes Ollama reload the model
    num_predict: int | None = None  # default by mode
    parse_retries: int = 2
    max_attempts: int = 5  # per request, for transient failures
    backoff_s: float = 0.5
    backoff_max_s: float = 8.0
    down_after: int = 3
    variance_sample: int = 20  # items re-judged with another seed to measure the judge's residual variance
    rescore: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mode not in self.rubric.instructions:
            raise ValueError(f"rubric {self.rubric.ref} has no {self.mode!r} mode; SEAL-strict needs seal-yesno")
        if self.concurrency < 1 or self.max_attempts < 1 or self.parse_retries < 0 or self.down_after < 1:
            raise ValueError("concurrency, max_attempts and down_after must be >= 1; parse_retries >= 0")

    def options(self, vote: int) -> dict[str, Any]:
        num_predict = self.num_predict or DEFAULT_NUM_PREDICT[self.mode]
        return {
            "temperature": 0,
            "seed": self.seed + vote,
            "num_ctx": self.num_ctx,
            "num_predict": num_predict,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "rubric": self.rubric.ref,
            "rubric_hash": self.rubric.hash,
            "mode": self.mode,
            "concurrency": self.concurrency,
            "options": self.options(0),
            "parse_retries": self.parse_retries,
            "max_attempts": self.max_attempts,
            "variance_sample": self.variance_sample,
            "rescore": self.rescore,
        }


@dataclass
class GradeOutcome:
    items: int
    votes: int  # planned judge votes (items x judges, plus the variance sample)
    cached: int
    sent: int  # HTTP requests sent, retries included
    stored: int  # judgements committed by this run (scored, or the judge's reply unparseable or truncated)
    failed: int  # votes left unscored by infrastructure failures
    judges_down: dict[str, str]
    infos: list[JudgeInfo]
    wall_s: float
    preflight_s: float  # part of wall_s spent checking and warming up the judges
    scored: int = 0  # of the stored judgements, those with a verdict (stored - scored: unusable replies)


class _GaveUp(Exception):
    def __init__(self, reason: str, fatal: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.fatal = reason, fatal


@dataclass
class _Job:
    key: str
    judge: int
    vote: int
    request: JudgeRequest
    targets: list[str] = field(default_factory=list)  # item ids answered by this key (identical requests share it)


@dataclass
class _JudgeState:
    judge: Judge
    info: JudgeInfo
    consecutive_failures: int = 0
    down_reason: str | None = None


def item_metrics(item: Item) -> dict[str, float]:
    if item.kind == "qa":
        return qa_metrics(item.prediction or "", item.gold)
    return arc_metrics(item.attempts or (), item.gold, outputs=item.outputs)


def variance_sample(items: Sequence[Item], size: int) -> set[str]:
    """A deterministic, order-independent sample: the ``size`` gradable items with the smallest id hashes."""
    gradable = [i.item_id for i in items if i.kind == "qa" and (i.prediction or "").strip()]
    gradable.sort(key=lambda item_id: hashlib.sha256(item_id.encode()).digest())
    return set(gradable[:size])


async def preflight_all(judges: Sequence[Judge], settings: GradeSettings) -> list[JudgeInfo]:
    names = [j.name for j in judges]
    if len(set(names)) != len(names):
        raise ValueError(f"the same judge appears twice in the panel: {names}")
    if len(judges) > 1 and len(judges) % 2 == 0:
        raise ValueError(f"a panel needs an odd number of judges so that a majority exists (got {len(judges)})")
    return [await _preflight(judge, settings) for judge in judges]


async def _preflight(judge: Judge, settings: GradeSettings) -> JudgeInfo:
    """A server that is still starting (refused, busy, 5xx) gets the same back-off as a request."""
    for attempt in range(1, settings.max_attempts + 1):
        try:
            return await judge.preflight(settings.options(0))
        except TransientJudgeError:
            if attempt == settings.max_attempts:
                raise
        await asyncio.sleep(min(settings.backoff_max_s, settings.backoff_s * 2 ** (attempt - 1)))
    raise AssertionError("unreachable")


class _Run:
    def __init__(
        self,
        cache: JudgementCache,
        settings: GradeSettings,
        states: list[_JudgeState],
        log: Callable[[str], None] | None,
        on_failure: Callable[[str, str, int, str], None] | None = None,
    ) -> None:
        """`on_failure(item_id, judge, vote, reason)`: where a vote left unscored is recorded (default: the cache's
        run tables, which only `grade()` owns)."""
        self.cache, self.settings, self.states, self.log = cache, settings, states, log
        self.on_failure = on_failure or cache.record_failure
        self.sent = self.stored = self.scored = self.failed = self.done = 0
        self.total = 0
        self._last_log = time.monotonic()

    def _tick(self) -> None:
        self.done += 1
        now = time.monotonic()
        if self.log is not None and (now - self._last_log >= 2.0 or self.done == self.total):
            self._last_log = now
            unusable = self.stored - self.scored
            self.log(
                # requests, not items: the variance re-judges are requests too
                f"judge requests {self.done}/{self.total}: {self.scored} scored, {unusable + self.failed} unscored "
                f"({unusable} unparseable or truncated replies, {self.failed} failed requests)"
            )

    def _fail(self, job: _Job, reason: str) -> None:
        name = self.states[job.judge].info.name
        for item_id in job.targets:
            self.on_failure(item_id, name, job.vote, reason)
        self.failed += 1
        self._tick()

    async def worker(self, state: _JudgeState, jobs: Iterator[_Job]) -> None:
        for job in jobs:
            if state.down_reason is not None:
                self._fail(job, f"judge down: {state.down_reason}")
                continue
            try:
                judgement = await self._judge(state, job)
            except _GaveUp as exc:
                self._fail(job, exc.reason)
                state.consecutive_failures += 1
                if exc.fatal or state.consecutive_failures >= self.settings.down_after:
                    state.down_reason = state.down_reason or exc.reason
                continue
            state.consecutive_failures = 0
            self.cache.store(judgement)
            self.stored += 1
            self.scored += judgement.status == "scored"
            self._tick()

    async def _judge(self, state: _JudgeState, job: _Job) -> Judgement:
        settings, rubric = self.settings, self.settings.rubric
        replies: list[dict[str, Any]] = []
        counters = {"prompt_tokens": 0, "completion_tokens": 0, "prompt_ns": 0, "eval_ns": 0, "total_ns": 0}
        latency = 0.0
        status, verdict, reason = "unparseable", None, None
        for retry in range(settings.parse_retries + 1):
            request = job.request
            if retry:
                options = {
                    **request.options,
                    "temperature": RETRY_TEMPERATURE,
                    "seed": request.options["seed"] + retry,
                }
                request = replace(request, options=options)
            reply = await self._send(state, request)
            record: dict[str, Any] = {"text": reply.text, "done_reason": reply.done_reason}
            if retry:
                record["options"] = request.options
            replies.append(record)
            latency += reply.latency_s
            for name in counters:
                counters[name] += getattr(reply, name) or 0
            if reply.done_reason == "length":
                status, reason = (
                    "truncated",
                    f"truncated: the reply reached num_predict={request.options['num_predict']}",
                )
                break
            verdict, reason = rubric.parse(reply.text, settings.mode)
            if verdict is not None:
                status = "scored"
                break
        return Judgement(
            key=job.key,
            judge=state.info.name,
            vote=job.vote,
            status=status,
            verdict=verdict,
            reason=reason,
            request=_request_record(state.info, rubric, job),
            replies=replies,
            latency_s=latency,
            **counters,
        )

    async def _send(self, state: _JudgeState, request: JudgeRequest) -> JudgeReply:
        settings = self.settings
        last = "no attempt"
        for attempt in range(1, settings.max_attempts + 1):
            if state.down_reason is not None:
                raise _GaveUp(f"judge down: {state.down_reason}")
            self.sent += 1
            try:
                return await state.judge.complete(request)
            except FatalJudgeError as exc:
                raise _GaveUp(str(exc), fatal=True) from None
            except TransientJudgeError as exc:
                last = str(exc)
            except Exception as exc:  # a back-end bug must cost one item, not the run
                last = f"unexpected {type(exc).__name__}: {exc}"
            if attempt < settings.max_attempts:
                await asyncio.sleep(min(settings.backoff_max_s, settings.backoff_s * 2 ** (attempt - 1)))
        raise _GaveUp(f"{last} (gave up after {settings.max_attempts} attempts)")


def _request_record(info: JudgeInfo, rubric: Rubric, job: _Job) -> dict[str, Any]:
    return {
        "judge": info.name,
        "digest": info.digest,
        "server_version": info.server_version,
        "rubric": rubric.ref,
        "rubric_hash": rubric.hash,
        "messages": job.request.messages,
        "options": dict(job.request.options),
        "schema": job.request.schema,
        "vote": job.vote,
    }


def plan_run(
    items: Sequence[Item], infos: Sequence[JudgeInfo], settings: GradeSettings
) -> tuple[list[tuple[str, Any, Any]], list[PlanRow], dict[str, _Job]]:
    """Metrics rows, the plan (which key answers which item/judge/vote) and the unique jobs."""
    rubric, mode = settings.rubric, settings.mode
    schema = rubric.schema(mode)
    sample = variance_sample(items, settings.variance_sample) if infos else set()
    rows: list[tuple[str, Any, Any]] = []
    plan: list[PlanRow] = []
    jobs: dict[str, _Job] = {}
    for item in items:
        stored = item.to_json() if item.source is None else {**item.to_json(), "input": item.source}
        rows.append((item.item_id, stored, item_metrics(item)))
        if item.kind != "qa" or not infos:
            continue
        prediction = item.prediction or ""
        votes = (0, 1) if item.item_id in sample else (0,)
        if not prediction.strip():
            # An empty answer is decided by the rubric's rule, without a call (SEAL does the same).
            plan.extend(
                PlanRow(item.item_id, info.name, v, None, rubric.empty_answer_verdict) for info in infos for v in votes
            )
            continue
        messages = rubric.render(item.question, item.gold, prediction, mode)
        for vote in votes:
            options = settings.options(vote)
            for index, info in enumerate(infos):
                key = judgement_key(
                    judge=info.name,
                    digest=info.digest,
                    server_version=info.server_version,
                    rubric_hash=rubric.hash,
                    messages=messages,
                    options=options,
                    schema=schema,
                    vote=vote,
                )
                plan.append(PlanRow(item.item_id, info.name, vote, key))
                job = jobs.get(key)
                if job is None:
                    job = jobs[key] = _Job(key, index, vote, JudgeRequest(messages, schema, options))
                job.targets.append(item.item_id)
    return rows, plan, jobs


async def grade(
    items: Sequence[Item],
    judges: Sequence[Judge],
    settings: GradeSettings,
    cache: JudgementCache,
    *,
    run_meta: Mapping[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    infos: Sequence[JudgeInfo] | None = None,
) -> GradeOutcome:
    """Grade ``items`` with a panel of ``judges`` (possibly none: metrics only) into ``cache``.

    Raises ``JudgeError`` when a judge fails its preflight (nothing is written then) and ``ValueError`` for an
    invalid panel. Everything else ends in the cache: judgements as they arrive, failures with their reasons.
    ``infos``: the judges' preflight, when the caller ran ``preflight_all`` itself (before creating the cache).
    """
    started = time.perf_counter()
    if judges and not any(item.kind == "qa" for item in items):
        # ARC metrics are deterministic: a judge is never asked, so it need not be reachable either.
        if log is not None:
            log("no question-answer items: the judges are not contacted (ARC metrics need none)")
        judges, infos = [], []
    infos = await preflight_all(judges, settings) if infos is None else list(infos)
    if len(infos) != len(judges):
        raise ValueError(f"{len(infos)} preflight results for {len(judges)} judges")
    preflight_s = time.perf_counter() - started
    rows, plan, jobs = plan_run(items, infos, settings)
    meta = {
        **(run_meta or {}),
        "settings": settings.to_json(),
        "judges": [i.to_json() for i in infos],
        "started_at": time.time(),
        "finished": None,
    }
    cache.start_run(meta, rows, plan)
    cached = set() if settings.rescore else cache.lookup(jobs)
    states = [_JudgeState(judge, info) for judge, info in zip(judges, infos)]
    run = _Run(cache, settings, states, log)
    pending = [job for key, job in jobs.items() if key not in cached]
    # Main votes first, then the variance sample: a run cut short has the verdicts that matter most.
    pending.sort(key=lambda job: job.vote)
    run.total = len(pending)
    workers = []
    for index, state in enumerate(states):
        queue = iter([job for job in pending if job.judge == index])
        workers.extend(run.worker(state, queue) for _ in range(settings.concurrency))
    await asyncio.gather(*workers)
    wall = time.perf_counter() - started
    outcome = GradeOutcome(
        items=len(items),
        votes=len(plan),
        cached=len(jobs) - len(pending),
        sent=run.sent,
        stored=run.stored,
        failed=run.failed,
        scored=run.scored,
        judges_down={s.info.name: s.down_reason for s in states if s.down_reason},
        infos=infos,
        wall_s=wall,
        preflight_s=preflight_s,
    )
    cache.set_meta(
        "finished",
        {
            "wall_s": wall,
            "preflight_s": preflight_s,
            "items": len(items),
            "votes": len(plan),
            "unique_requests": len(jobs),
            "cached": outcome.cached,
            "sent": run.sent,
            "stored": run.stored,
            "scored": run.scored,
            "failed": run.failed,
            "judges_down": outcome.judges_down,
            "items_per_s": len(items) / wall if wall > 0 else None,
        },
    )
    return outcome
