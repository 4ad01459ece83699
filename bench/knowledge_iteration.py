"""Share of the wall time of one SEAL iteration of knowledge incorporation (the `seal demo` job: SmolLM2-135M,
2 passages x 2 self-edits, behaviour cloning, then the new model's self-edits) not spent in forward, backward or
generation.

    python bench/knowledge_iteration.py [--model smollm2-135m] [--set KEY=VALUE ...]

Every stage runs through the real run store (claims, journals, artifacts, barriers) in this process. Compute =
generation (self-edit sampling, answers), the inner loops' forward + backward, the teacher-forced gold-NLL
forwards, and behaviour cloning's forward + backward. Everything else is overhead: model loads, encoding, LoRA
resets, optimizer steps, scoring, journaling, saving and merging. Interpreter start and imports are outside.
Last line: {"bench": "knowledge_iteration", "overhead_fraction": …, "stage_seconds": {…}, …}
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

COMPUTE_KEYS = ("train_compute", "generate", "nll")


def _compute_seconds(stage: str, result: Any) -> float:
    if not isinstance(result, dict):
        return 0.0
    if stage.endswith(".sample"):
        return result.get("timings", {}).get("generate", 0.0)
    if stage.endswith(".sft"):
        return result.get("timings", {}).get("train_compute", 0.0)
    if result.get("reused_from"):
        return 0.0
    rounds = (result.get("evaluation") or {}).get("rounds", [])
    return sum(r.get("timings", {}).get(key, 0.0) for r in rounds for key in COMPUTE_KEYS)


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
    from runners.pipelines import knowledge_seal

    cfg = load_config("demo", "cpu", [f"model.spec={args.model}", *args.overrides])
    timed = run_timed(cfg, knowledge_seal, _compute_seconds, keep=args.keep)
    wall = sum(timed["stage_seconds"].values())
    compute = sum(timed["stage_compute_seconds"].values())
    sft = timed["results"]["it0.sft"]["sft"]
    print(
        json.dumps(
            {
                "bench": "knowledge_iteration",
                "overhead_fraction": round((wall - compute) / wall, 4),
                "wall_seconds": round(wall, 2),
                "compute_seconds": round(compute, 2),
                "stage_seconds": timed["stage_seconds"],
                "stage_compute_seconds": timed["stage_compute_seconds"],
                "stage_statuses": timed["stage_statuses"],
                "behaviour_cloned": not sft.get("carried_forward"),
                "model": args.model,
                "overrides": args.overrides,
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
