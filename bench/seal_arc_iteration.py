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
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/iteration_timing.py
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the repository, when run as a script


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
    parser.add_argument("--keep", metavar="DIR", help="run in this new folder and leave it there to inspect")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from iteration_timing import run_timed

    from runners.config import load_config
    from runners.pipelines import arc_seal

    cfg = load_config("demo_arc", "cpu", [f"model.spec={args.model}", *args.overrides])
    timed = run_timed(cfg, arc_seal, _compute_seconds, keep=args.keep)
    stage_seconds, compute_seconds, statuses = (
        timed["stage_seconds"],
        timed["stage_compute_seconds"],
        timed["stage_statuses"],
    )
    sft = timed["results"]["it0.sft"]["sft"]
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
