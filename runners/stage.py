"""Run one stage: pick this worker's units, skip what is journaled, claim, process, record, show progress; and a
pipeline of stages in order, each behind its barrier (`runners/barrier.py`).

A stage's per-worker setup (loading a model, say) happens lazily on the first unit that really needs processing,
so re-running a finished stage costs a journal scan and nothing else. The processor is closed when the stage ends,
so one stage's model leaves memory before the next stage loads its own.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from runners.barrier import Waiting, check_barrier, check_needs, done_units
from runners.chunks import Chunk, ClaimBoard, SelectionError, check_only, select_units, worker_identity
from runners.names import check_stage_name, check_unit_ids
from runners.store import DONE_STATUSES, RunStore, Status, UnitRecord
from runners.units import read_frozen_units, resolve_units
from ttt import memory  # torch-free: the back-off state and the per-step memory log

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What processing one unit produced. `invalid` is a recorded, expected failure (model garbage);
    an exception inside `process` becomes an `error` record and is retried on the next run."""

    status: Status
    result: Any = None
    reason: str | None = None
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> path relative to the run root


ProcessFn = Callable[[str], Outcome]  # may have a `close()`: called when the stage ends


@dataclass
class StageSpec:
    """One stage. `units`: the ids, or a function computing them when the stage starts (after its barrier), frozen
    to `stages/<name>/units.json`. `needs`: stages whose every unit must be recorded first. `single`: a stage of
    one unit (select, SFT, merge) that --chunk/--only/--limit never split or skip. `group`: unit id -> group id;
    --only/--limit/--chunk act on groups."""

    name: str
    units: list[str] | Callable[[], list[str]]
    make_processor: Callable[[], ProcessFn]  # called once per worker, only if some unit must be processed
    needs: tuple[str, ...] = ()
    single: bool = False
    group: Callable[[str], str] | None = None
    # The barrier asks only for the needed stages' units of the groups this worker selected (an inner loop of task
    # T needs T's self-edits, not every task's), so `--only T` and each chunk go as far as their own groups allow.
    needs_per_group: bool = False
    # Called once the barrier is met: None when the stage may start, else what it waits for outside the run
    # (verdicts graded elsewhere). It may prepare what the outside needs (write the bundle to grade).
    ready: Callable[[], str | None] | None = None
    # A recorded (ok/invalid) unit whose record this says is not final counts as not done: it is processed again
    # and its new line replaces the old one (records an older version wrote before it knew better).
    redo: Callable[[UnitRecord], bool] | None = None

    def __post_init__(self) -> None:
        check_stage_name(self.name)
        for need in self.needs:
            check_stage_name(need)
        if not callable(self.units):
            self.units = check_unit_ids(self.name, self.units)


@dataclass(frozen=True)
class Selection:
    only: tuple[str, ...] = ()
    limit: int | None = None
    chunk: Chunk | None = None

    def __post_init__(self) -> None:
        # Checked when the options are read, before a run directory is touched (as Chunk.parse does for --chunk).
        if self.limit is not None and self.limit < 0:
            raise SelectionError(f"--limit {self.limit}: must be ≥ 0")


class Executor(Protocol):
    """Runs claimed units. `submit` hands over one unit and returns the (unit, record) pairs finished meanwhile (it
    may block until a slot is free); `drain` waits for the rest; `close` frees the stage's processors."""

    def submit(self, unit: str) -> list[tuple[str, UnitRecord]]: ...
    def drain(self) -> list[tuple[str, UnitRecord]]: ...
    def close(self) -> None: ...


MakeExecutor = Callable[..., Executor]  # (spec, *, worker_name, config_hash, oom_retries, todo) -> Executor


class LocalExecutor:
    """Units one after another in this process. The processor (a model, say) is made on the first unit that needs
    processing and closed when the stage ends, so one stage's model leaves memory before the next stage loads."""

    def __init__(self, spec: StageSpec, *, worker_name: str, config_hash: str | None, oom_retries: int, todo: int = 0):
        self.spec, self.worker_name, self.config_hash, self.oom_retries = spec, worker_name, config_hash, oom_retries
        self.processor: ProcessFn | None = None
        memory.reset_backoff()

    def submit(self, unit: str) -> list[tuple[str, UnitRecord]]:
        if self.processor is None:
            self.processor = self.spec.make_processor()
        return [(unit, process_unit(self.processor, self.spec.name, unit, self.worker_name, self.config_hash,
                                    self.oom_retries))]  # fmt: skip

    def drain(self) -> list[tuple[str, UnitRecord]]:
        return []

    def close(self) -> None:
        close = getattr(self.processor, "close", None)
        self.processor = None
        if callable(close):
            close()


def process_unit(
    processor: ProcessFn, stage: str, unit: str, worker_name: str, config_hash: str | None, oom_retries: int
) -> UnitRecord:
    """One unit, wherever it runs: memory log context, the unit with its OOM back-off, then the GPU cache freed."""
    memory.set_context(stage=stage, unit=unit)
    record = _process_one(processor, unit, worker_name, config_hash, oom_retries)
    memory.release_cached_memory()  # what this unit cached on the GPU goes back before the next
    return record


@dataclass
class StageSummary:
    stage: str
    selected: int
    already_done: int
    processed: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    held_elsewhere: list[str] = field(default_factory=list)
    waiting: Waiting | None = None  # the stage did not start: a stage it needs is not fully recorded

    @property
    def complete(self) -> bool:
        return self.waiting is None and not self.held_elsewhere and self.by_status.get("error", 0) == 0


def unit_seed(run_seed: int, unit_id: str) -> int:
    """A unit's RNG seed: independent of process, chunk and order, so a resumed run reproduces an uninterrupted one."""
    return int.from_bytes(hashlib.sha256(f"{run_seed}:{unit_id}".encode()).digest()[:4], "big")


def run_stage(
    store: RunStore,
    spec: StageSpec,
    selection: Selection = Selection(),
    *,
    claim_timeout_s: float = 900.0,
    progress: bool = True,
    worker: dict[str, object] | None = None,
    config_hash: str | None = None,
    oom_retries: int = 3,
    make_executor: MakeExecutor | None = None,
) -> StageSummary:
    """Process this worker's selection of a stage whose barrier is met (run_pipeline checks it). A unit that runs out
    of memory is retried smaller, up to `oom_retries` times (`_process_one`). `make_executor`: where units run
    (`LocalExecutor`, this process, by default; `runners.ray_executor` for Ray); selection, claims and the journal
    stay here in any case."""
    worker = worker or worker_identity()
    worker_name = f"{worker['host']}:{worker['pid']}:{worker['id']}"
    journal = store.journal(spec.name)
    selected = _select(spec, resolve_units(store, spec), selection)
    done = done_units(store, spec)
    todo = [u for u in selected if u not in done]

    def is_done(unit: str) -> bool:
        if not journal.is_done(unit):
            return False
        if spec.redo is None:
            return True
        record = journal.records().get(unit)
        return record is None or not spec.redo(record)

    summary = StageSummary(stage=spec.name, selected=len(selected), already_done=len(selected) - len(todo))
    board = ClaimBoard(store.claims_dir(spec.name), claim_timeout_s, worker)
    board.sweep(done)
    store.sweep_work(spec.name, done)
    if not todo:
        log.info("stage %s: all %d selected units already recorded", spec.name, len(selected))
        return summary

    bar = _progress_bar(spec.name, len(selected), summary.already_done, enabled=progress)
    make = make_executor or LocalExecutor
    executor = make(spec, worker_name=worker_name, config_hash=config_hash, oom_retries=oom_retries, todo=len(todo))

    def record(unit: str, record: UnitRecord) -> None:
        """Only this process appends the journal, whichever executor processed the unit; then the claim goes."""
        try:
            journal.append(record)
            if record.status in DONE_STATUSES:  # after an `error` the folder stays for the retry
                store.remove_work_dir(spec.name, unit)
            summary.processed += 1
            summary.by_status[record.status] = summary.by_status.get(record.status, 0) + 1
            store.sync()
        finally:
            board.release(unit)
        if bar is not None:
            bar.update(1)

    try:
        pending = todo
        for attempt in range(2):  # a second pass takes over claims whose holders died during the first
            held: list[str] = []
            for unit in pending:
                if is_done(unit):
                    continue  # finished by another worker meanwhile
                if not board.try_claim(unit):
                    held.append(unit)
                    continue
                if is_done(unit):  # re-check under the claim: no unit is processed twice
                    board.release(unit)
                    continue
                for finished in executor.submit(unit):  # a local executor finishes it now; Ray when a slot frees
                    record(*finished)
            for finished in executor.drain():
                record(*finished)
            pending = held
            if not pending or attempt == 1:
                break
            time.sleep(0.2)
        summary.held_elsewhere = [u for u in pending if not is_done(u)]
    finally:
        board.close()  # releases the claims of units still in flight (an interrupted driver)
        if bar is not None:
            bar.close()
        executor.close()
    if summary.held_elsewhere:
        log.info("stage %s: %d units are being processed by other workers", spec.name, len(summary.held_elsewhere))
    return summary


def _select(spec: StageSpec, units: list[str], selection: Selection) -> list[str]:
    if spec.single:
        return units  # any worker takes a single-unit stage (through its claim), whatever its selection
    chunk, only, limit = selection.chunk, selection.only, selection.limit
    return select_units(units, only=only, limit=limit, chunk=chunk, group=spec.group, strict=False)


def _groups(spec: StageSpec, units: list[str]) -> set[str]:
    return {spec.group(u) for u in units} if spec.group else set(units)


OOM_ADVICE = (
    "lower the batch (train.batch_size, restem.batch_size, infer.batch_size) or the context (train.max_len, "
    "ttt_data.max_tokens, infer.max_tokens), the LoRA rank, or use the profile of a bigger GPU"
)


def _process_one(
    processor: ProcessFn, unit: str, worker_name: str, config_hash: str | None, oom_retries: int = 3
) -> UnitRecord:
    """Run one unit. Out of memory: free what the attempt held, shrink (ttt/memory.py), retry; the steps taken go
    into the journal line. Any other exception is an infrastructure failure, recorded as `error`."""
    start = time.perf_counter()
    backoffs: list[dict[str, str]] = []
    while True:
        failure = None
        try:
            outcome = processor(unit)
        except Exception as exc:
            failure = exc
            oom = memory.is_out_of_memory(exc)
            reason = f"{type(exc).__name__}: {exc}"
            message = reason.splitlines()[0][:300]
            tail = "".join(traceback.format_exception(exc)[-3:])[-2000:]
            if not oom:
                # One line on the console (the reason is in the unit's journal record too); the traceback goes
                # only to the worker's log file, whose handler takes INFO while the console shows WARNING and up.
                log.error("unit %s failed: %s", unit, message)
                log.info("unit %s failed: traceback", unit, exc_info=True)
        if failure is None:
            break
        del failure  # the traceback's frames hold the attempt's tensors: drop them before retrying
        if oom and len(backoffs) < oom_retries:
            gc.collect()  # the failed attempt's tensors are unreachable now; free them before the cache is emptied
            memory.release_cached_memory()
            step = memory.shrink()
            backoffs.append({"error": message, "then": step})
            log.warning("unit %s ran out of memory (%s); retrying with %s", unit, message, step)
            continue
        if oom:
            tried = "; ".join(b["then"] for b in backoffs) or "no retries allowed (run.oom_retries=0)"
            reason = f"out of memory after {len(backoffs)} back-off(s) ({tried}): {message}. To fix: {OOM_ADVICE}"
            log.error("unit %s: %s", unit, reason)
            outcome = Outcome("error", {"traceback": tail, "oom_backoff": backoffs}, reason)
        else:  # an infrastructure failure: recorded as `error`, retried on the next run
            outcome = Outcome("error", {"traceback": tail}, reason)
        break
    state = memory.backoff()
    if outcome.status != "error" and (backoffs or state.degraded) and isinstance(outcome.result, dict):
        # Results of a degraded unit say so: the batch split changes nothing but speed, a shorter context may
        # have skipped training examples (their counts are in the result).
        degraded = {**state.to_dict(), "events": backoffs}
        outcome = Outcome(
            outcome.status, {**outcome.result, "oom_backoff": degraded}, outcome.reason, outcome.artifacts
        )
    return UnitRecord(
        unit=unit,
        status=outcome.status,
        reason=outcome.reason,
        result=outcome.result,
        seconds=time.perf_counter() - start,
        worker=worker_name,
        artifacts=dict(outcome.artifacts),
        config_hash=config_hash,
    )


def _progress_bar(stage: str, total: int, initial: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=f"stage {stage}", unit="unit", dynamic_ncols=True, leave=True)


def check_selection(store: RunStore, stages: Sequence[StageSpec], selection: Selection) -> dict[str, set[str] | None]:
    """Check --only against every stage whose units are known now (static, or frozen by an earlier session) and
    return those groups (None: a stage computed later). Reads only, so the driver calls it before the manifest."""
    groups: dict[str, set[str] | None] = {}
    for spec in stages:
        if not spec.single:
            known = spec.units if not callable(spec.units) else read_frozen_units(store, spec.name)
            groups[spec.name] = _groups(spec, known) if known is not None else None
    check_only(selection.only, groups)
    return groups


def run_pipeline(
    store: RunStore,
    stages: Sequence[StageSpec],
    selection: Selection,
    *,
    claim_timeout_s: float,
    progress: bool,
    config_hash: str | None = None,
    oom_retries: int = 3,
    make_executor: MakeExecutor | None = None,
) -> list[StageSummary]:
    """Run the stages in order. The pipeline stops at a stage with errors (retry them first) or at one whose barrier
    is not met (its summary then carries `waiting`). Units held by other workers stop it only in a pipeline that
    declares no `needs` (its order is its only dependency); where needs are declared, the barriers say what waits,
    so a second worker goes on to the stages it can do instead of quitting."""
    stages = list(stages)
    check_needs(stages)
    specs = {spec.name: spec for spec in stages}
    groups = check_selection(store, stages, selection)
    units: dict[str, list[str]] = {}
    summaries: list[StageSummary] = []
    worker = worker_identity()
    ordered_only = not any(spec.needs for spec in stages)
    for spec in stages:
        previous = summaries[-1] if summaries else None
        if previous is not None and previous.by_status.get("error", 0):
            break  # retry the errors first
        waiting = check_barrier(store, spec, specs, units, selection)
        if waiting is None and spec.ready is not None:
            note = spec.ready()
            if note is not None:
                waiting = Waiting(spec.name, "", 0, 0, note=note)
        if waiting is not None:
            log.info("%s", waiting.message())
            summaries.append(StageSummary(stage=spec.name, selected=0, already_done=0, waiting=waiting))
            break
        if previous is not None and not previous.complete and ordered_only:
            break  # units held by other workers, and nothing says what may run without them
        units[spec.name] = resolve_units(store, spec)
        if not spec.single:
            groups[spec.name] = _groups(spec, units[spec.name])
            check_only(selection.only, groups)
        summary = run_stage(
            store,
            spec,
            selection,
            claim_timeout_s=claim_timeout_s,
            progress=progress,
            worker=worker,
            config_hash=config_hash,
            oom_retries=oom_retries,
            make_executor=make_executor,
        )
        summaries.append(summary)
    return summaries
