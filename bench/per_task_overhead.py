"""Share of per-task wall time of the oracle TTT pipeline (SmolLM2-135M, CPU) not spent in forward, backward or
generation: data building, adapter reset, optimizer bookkeeping, view building, voting, saving, journaling.

    python bench/per_task_overhead.py [--tasks 66e6c45b c7d4e6ad]

Runs the real pipeline stage (claims, journal, artifact saving on) through the run store. The one-time model load
per worker is reported separately (`model_load_s`): it is paid once per process, not per task.
Last line: {"bench": "per_task_overhead", "overhead_fraction": …, …}
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", nargs="+", default=["66e6c45b", "c7d4e6ad"])
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from runners.config import load_config
    from runners.pipelines import arc_ttt
    from runners.stage import StageSpec, run_stage
    from runners.store import RunStore

    cfg = load_config(
        "demo_ttt",
        "cpu",
        [f"model.spec={args.model}", f"arc.task_ids=[{', '.join(args.tasks)}]", "run.keep_adapters=true"],
    )
    with tempfile.TemporaryDirectory(prefix="seal-bench-overhead-") as tmp:
        store = RunStore.open(tmp)
        (spec,) = arc_ttt.stages(cfg, store)
        start = time.perf_counter()
        processor = spec.make_processor()
        model_load_s = time.perf_counter() - start
        timed = StageSpec(spec.name, spec.units, lambda: processor)
        start = time.perf_counter()
        run_stage(store, timed, progress=False)
        wall = time.perf_counter() - start
        records = store.records(spec.name)
        compute = sum(r.result["timings"]["train_compute"] + r.result["timings"]["generate"] for r in records.values())
        parts: dict[str, float] = {}
        for r in records.values():
            for key, value in r.result["timings"].items():
                parts[key] = parts.get(key, 0.0) + value
        store.close()
    overhead = wall - compute
    print(
        json.dumps(
            {
                "bench": "per_task_overhead",
                "model": args.model,
                "tasks": len(args.tasks),
                "wall_s": round(wall, 2),
                "forward_backward_generate_s": round(compute, 2),
                "overhead_s": round(overhead, 3),
                "overhead_fraction": round(overhead / wall, 4),
                "breakdown_s": {k: round(v, 3) for k, v in parts.items()},
                "model_load_s": round(model_load_s, 2),
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
