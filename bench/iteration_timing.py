"""Shared by the iteration benchmarks: run every stage of an experiment through the real run store in this
process, timing each stage and summing the compute seconds its journal lines report."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def run_timed(cfg: Any, pipeline: Any, compute: Callable[[str, Any], float], keep: str | None = None) -> dict[str, Any]:
    """{"stage_seconds", "stage_compute_seconds", "stage_statuses", "results"} of one run of `cfg` in a temporary
    run directory (or in `keep`, a fresh folder left behind to inspect); `compute(stage, result)`: the
    forward/backward/generation seconds of one journal line."""
    from runners.config import identity_hash
    from runners.stage import run_stage
    from runners.store import RunStore

    stage_seconds: dict[str, float] = {}
    compute_seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="seal-bench-iteration-") as tmp:
        if keep is not None:
            if Path(keep).exists():
                raise SystemExit(f"--keep {keep}: the folder exists; name a new one")
            tmp = keep
        store = RunStore.open(tmp)
        stages = pipeline.stages(cfg, store)
        run_hash = identity_hash(cfg, pipeline.CONFIG_SECTIONS, pipeline.CONFIG_EXCLUDE)
        store.start(cfg.to_dict(), run_hash)
        for spec in stages:
            start = time.perf_counter()
            summary = run_stage(store, spec, progress=False, config_hash=run_hash)
            stage_seconds[spec.name] = round(time.perf_counter() - start, 3)
            if not summary.complete:
                raise SystemExit(f"stage {spec.name} did not complete: {summary}")
            records = store.records(spec.name)
            compute_seconds[spec.name] = round(sum(compute(spec.name, r.result) for r in records.values()), 3)
        statuses = {
            name: {s: sum(1 for r in store.records(name).values() if r.status == s) for s in ("ok", "invalid")}
            for name in stage_seconds
        }
        results = {name: {u: r.result for u, r in store.records(name).items()} for name in stage_seconds}
        store.close()
    return {
        "stage_seconds": stage_seconds,
        "stage_compute_seconds": compute_seconds,
        "stage_statuses": statuses,
        "results": results,
    }
