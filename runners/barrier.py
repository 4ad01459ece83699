"""Barriers: a stage that `needs` others starts only once every unit of those stages is recorded, in any journal
file of theirs (every chunk, every worker), not just in this worker's selection. Otherwise the pipeline stops and
says what it waits for; running the command again later continues."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from runners.chunks import Chunk, select_units
from runners.store import RunStore

if TYPE_CHECKING:
    from runners.stage import Selection, StageSpec


@dataclass(frozen=True)
class Waiting:
    stage: str
    needed_stage: str
    missing: int
    total: int
    chunks: list[str] = field(default_factory=list)  # the `k/n` chunks holding missing units (under --chunk k/n)
    note: str | None = None  # what the stage waits for when it is not another stage (e.g. verdicts to import)
    left_out: int = 0  # missing units this command's --only/--limit never selects, in any chunk
    narrowed_by: str = ""  # those options as typed, e.g. "--limit 1"

    def message(self) -> str:
        if self.note is not None:
            return f"waiting: stage {self.stage}: {self.note}"
        where = ""
        if self.chunks:
            where = f" (chunk{'s' if len(self.chunks) > 1 else ''} {', '.join(self.chunks)})"
        head = f"waiting: stage {self.stage} needs {self.needed_stage}: {self.missing} of {self.total} units not "
        if self.left_out:
            # Running the same command again would select the same units and wait forever.
            return (
                f"{head}recorded yet{where}, {self.left_out} of them outside this command's {self.narrowed_by}: "
                f"run again without it (or with a wider one) to record them"
            )
        return f"{head}recorded yet{where}; run again when they are"


def check_needs(stages: list[StageSpec]) -> None:
    """Every needed stage must come earlier in the pipeline (stages run in order)."""
    seen: set[str] = set()
    for spec in stages:
        for need in spec.needs:
            if need not in seen:
                raise ValueError(f"stage {spec.name} needs {need!r}, which is not an earlier stage of the pipeline")
        seen.add(spec.name)


def done_units(store: RunStore, spec: StageSpec) -> set[str]:
    """The units of `spec` recorded as done, less those whose record the stage's `redo` says is not final (a
    reward written while its answers were unscored, by an older version): those are processed again."""
    done = store.journal(spec.name).done_units()
    if spec.redo is None or not done:
        return done
    records = store.records(spec.name)
    return {u for u in done if not (u in records and spec.redo(records[u]))}


def check_barrier(
    store: RunStore,
    spec: StageSpec,
    specs: Mapping[str, StageSpec],
    units: Mapping[str, list[str]],
    selection: Selection,
) -> Waiting | None:
    """The first unmet need of `spec`, or None. `units`: the resolved unit lists of the earlier stages."""
    mine: set[str] | None = None
    if spec.needs_per_group and isinstance(spec.units, list):
        group = spec.group or (lambda unit: unit)
        chosen = select_units(
            spec.units,
            only=selection.only,
            limit=selection.limit,
            chunk=selection.chunk,
            group=spec.group,
            strict=False,
        )
        mine = {group(u) for u in chosen}
    for need in spec.needs:
        needed_units = units[need]
        if mine is not None:
            need_group = specs[need].group or (lambda unit: unit)
            needed_units = [u for u in needed_units if need_group(u) in mine]
        done = done_units(store, specs[need])  # every journal*.jsonl of the stage: all chunks
        missing = [u for u in needed_units if u not in done]
        if missing:
            chunks = _chunks_holding(specs[need], needed_units, set(missing), selection)
            left_out = _left_out(specs[need], needed_units, missing, selection)
            return Waiting(
                spec.name, need, len(missing), len(needed_units), chunks, None, len(left_out), _narrowing(selection)
            )
    return None


def _narrowing(selection: Selection) -> str:
    options = [f"--only {','.join(selection.only)}"] if selection.only else []
    if selection.limit is not None:
        options.append(f"--limit {selection.limit}")
    return " and ".join(options)


def _left_out(spec: StageSpec, units: list[str], missing: list[str], selection: Selection) -> list[str]:
    """The missing units that no chunk of this command's --only/--limit would ever process. A single-unit stage
    ignores --only and --limit, so its unit is never left out."""
    if spec.single or (not selection.only and selection.limit is None):
        return []
    chunks: list[Chunk | None] = [None]
    if selection.chunk is not None:
        chunks = [Chunk(k, selection.chunk.count) for k in range(1, selection.chunk.count + 1)]
    reachable: set[str] = set()
    for chunk in chunks:
        reachable.update(
            select_units(units, only=selection.only, limit=selection.limit, chunk=chunk, group=spec.group, strict=False)
        )
    return [u for u in missing if u not in reachable]


def _chunks_holding(spec: StageSpec, units: list[str], missing: set[str], selection: Selection) -> list[str]:
    if selection.chunk is None or spec.single:
        return []
    n = selection.chunk.count
    out = []
    for k in range(1, n + 1):
        dealt = select_units(
            units, only=selection.only, limit=selection.limit, chunk=Chunk(k, n), group=spec.group, strict=False
        )
        if missing.intersection(dealt):
            out.append(f"{k}/{n}")
    return out
