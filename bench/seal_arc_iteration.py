"""Share of the wall time of one SEAL iteration on ARC (the `seal demo` job: SmolLM2-135M, 2 tasks x 2 self-edits,
then the new model's self-edits) not spent in forward, backward or generation.

    python bench/seal_arc_iteration.py [--model smollm2-135m] [--set KEY=VALUE ...]

Runs every stage of the demo through the real run store (claims, journals, artifacts, barriers) in this process
and times each stage. Compute = generation (self-edit sampling, the inference views), the inner loops' forward +
backward, and behaviour cloning's forward + backward (TRL's training_step). Everything else is overhead: model loads
(one per model per process, shared by consecutive stages), data and view building, LoRA resets, optimizer steps,
voting, journaling, saving and merging. Interpreter start and imports are outside the timed region.
Last line: {"bench": "seal_arc_iteration", "overhead_fraction": …, "stage_seconds": {…}, …}
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _compute_seconds(stage: str, result: dict[str, Any]) -> float:
    """The forward/backward/generation seconds a unit's journal line reports."""
    if not isinstance(result, dict):
        return 0.0
    if stage.endswith(".sample"):
        return result.get("timings", {}).get("generate", 0.0)
    if stage.endswith(".sft"):
        return result.get("timings", {}).get("train_compute", 0.0)
    timings = (result.get("evaluation") or {}).get("timings", {})
    return timings.get("train_compute", 0.0) + timings.get("generate", 0.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from runners.config import identity_hash, load_config
    from runners.pipelines import arc_seal
    from runners.stage import run_stage
    from runners.store import RunStore

    cfg = load_config("demo_arc", "cpu", [f"model.spec={args.model}", *args.overrides])
    stage_seconds: dict[str, float] = {}
    compute_seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="seal-bench-iteration-") as tmp:
        store = RunStore.open(tmp)
        stages = arc_seal.stages(cfg, store)
        run_hash = identity_hash(cfg, arc_seal.CONFIG_SECTIONS, arc_seal.CONFIG_EXCLUDE)
        store.start(cfg.to_dict(), run_hash)
        for spec in stages:
            start = time.perf_counter()
            summary = run_stage(store, spec, progress=False, config_hash=run_hash)
            stage_seconds[spec.name] = round(time.perf_counter() - start, 3)
            if not summary.complete:
                raise SystemExit(f"stage {spec.name} did not complete: {summary}")
            records = store.records(spec.name)
            compute_seconds[spec.name] = round(sum(_compute_seconds(spec.name, r.result) for r in records.values()), 3)
        statuses = {
            name: {s: sum(1 for r in store.records(name).values() if r.status == s) for s in ("ok", "invalid")}
            for name in stage_seconds
        }
        sft = store.records("it0.sft")["sft"].result
        store.close()
    wall = sum(stage_seconds.values())
    compute = sum(compute_seconds.values())
    print(
        json.dumps(
            {
                "bench": "seal_arc_iteration",
                "overhead_fraction": round((wall - compute) / wall, 4),
                "wall_seconds": round(wall, 2),
                "compute_seconds": round(compute, 2),
                "stage_seconds": stage_seconds,
                "stage_compute_seconds": compute_seconds,
                "stage_statuses": statuses,
                "behaviour_cloned": not sft.get("carried_forward"),
                "model": args.model,
                "overrides": args.overrides,
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
