"""The small-scale SEAL-on-ARC reproduction: `configs/experiments/repro_arc_small.yaml` once per seed, pooled.

    python bench/repro_arc_small.py [--seeds 0 1 2] [--tasks N] [--self-edits K] [--parallel P] [--set KEY=VALUE]

Each seed is an ordinary resumable run (`seal run repro_arc_small --set run.seed=S`) in `--runs-root/seedS-…`, so
a killed reproduction continues where it stopped. `--tasks N` keeps the first N tasks of `small-grids-30` (the full
size is 30). With `--parallel P` that many seeds run at once, one torch thread each.

Pooled per condition: the mean over tasks of each task's value (the fraction of its self-edits that solved it, or
1/0 for single runs) averaged over seeds, a 95 % bootstrap interval resampling tasks (the seeds of a task stay
together), and the paired difference to in-context on the same tasks and seeds.
Last line: {"bench": "repro_arc_small", "conditions": {…}, …}
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUBSET = "small-grids-30"


def _run_args(seed: int, tasks: list[str], self_edits: int, run_dir: Path, overrides: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "runners.cli", "run", "repro_arc_small", "--run-dir", str(run_dir),
        "--profile", "cpu", "--no-progress",
        "--set", f"run.seed={seed}",
        "--set", f"arc.task_ids=[{', '.join(tasks)}]",
        "--set", f"seal.self_edits={self_edits}",
        "--set", f"seal.max_attempts={2 * self_edits}",
        *(arg for override in overrides for arg in ("--set", override)),
    ]  # fmt: skip


def _pool(per_seed: list[dict[str, dict]], seed: int = 0) -> dict[str, dict]:
    from runners.seal_report import bootstrap_ci

    base_stage = "it0.base"
    pooled = {}
    stages = sorted(set().union(*(set(d) for d in per_seed)))
    for stage in stages:
        by_task: dict[str, list[float]] = {}
        base_by_task: dict[str, list[float]] = {}
        pairs = pairs_solved = pairs_usable = 0
        for data in per_seed:
            cond = data.get(stage)
            if cond is None:
                continue
            pairs += cond["pairs"]
            pairs_solved += cond["pairs_solved"]
            pairs_usable += cond.get("pairs_usable", 0)
            for task, value in cond["per_task"].items():
                by_task.setdefault(task, []).append(value)
                base = data.get(base_stage, {}).get("per_task", {}).get(task)
                if base is not None:
                    base_by_task.setdefault(task, []).append(value - base)
        values = [sum(v) / len(v) for v in by_task.values()]
        deltas = [sum(v) / len(v) for v in base_by_task.values()]
        name = next(d[stage]["name"] for d in per_seed if stage in d)
        pooled[stage] = {
            "name": name,
            "tasks": len(values),
            "mean": round(sum(values) / len(values), 4) if values else None,
            "ci95": bootstrap_ci(values, seed=seed),
            "delta_vs_incontext": round(sum(deltas) / len(deltas), 4) if deltas and stage != base_stage else None,
            "delta_ci95": bootstrap_ci(deltas, seed=seed) if stage != base_stage else None,
            "pairs": pairs,
            "pairs_solved": pairs_solved,
            "pairs_usable": pairs_usable,
            "tasks_solved_any": sum(1 for v in by_task.values() if max(v) > 0),
        }
    return pooled


def _table(pooled: dict[str, dict]) -> str:
    def ci(x: list[float] | tuple[float, float] | None) -> str:
        return "n/a" if x is None else f"[{x[0]:.3f}, {x[1]:.3f}]"

    rows = ["| condition | tasks | self-edits usable | pairs solved | tasks solved (any seed) | mean | 95% CI |"
            " Δ vs in-context | 95% CI |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for stage, c in pooled.items():
        pairs = f"{c['pairs_solved']}/{c['pairs']}" if c["pairs"] else "—"
        usable = f"{c['pairs_usable']}/{c['pairs']}" if c["pairs"] else "—"
        delta = "—" if c["delta_vs_incontext"] is None else f"{c['delta_vs_incontext']:+.3f}"
        rows.append(
            f"| {c['name']} (`{stage}`) | {c['tasks']} | {usable} | {pairs} | {c['tasks_solved_any']} | "
            f"{c['mean']:.3f} | "
            f"{ci(c['ci95'])} | {delta} | {ci(c['delta_ci95'])} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tasks", type=int, default=30)
    parser.add_argument("--self-edits", type=int, default=4)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--runs-root", default=str(REPO / "runs" / "repro_arc_small"))
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="KEY=VALUE for every seed's run (e.g. "
        "model.spec=tiny for a minute-long try of the machinery; its numbers mean nothing)"
    )  # fmt: skip
    args = parser.parse_args()

    from runners.config import build_config
    from runners.seal_report import report_data
    from runners.store import RunStore
    from ttt.arc import resolve_task_ids

    tasks = resolve_task_ids(SUBSET)[: args.tasks]  # type: ignore[index]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    root = Path(args.runs_root)
    # overrides make another run: its own folder (a resume of the plain run would be refused as a config change)
    tag = "-set" + hashlib.sha256("\n".join(args.overrides).encode()).hexdigest()[:8] if args.overrides else ""
    run_dirs = {s: root / f"seed{s}-tasks{len(tasks)}-k{args.self_edits}{tag}" for s in args.seeds}
    started = time.perf_counter()
    pending = list(args.seeds)
    running: dict[int, subprocess.Popen] = {}
    log_files = {}
    while pending or running:
        while pending and len(running) < args.parallel:
            seed = pending.pop(0)
            run_dirs[seed].mkdir(parents=True, exist_ok=True)
            log_files[seed] = open(run_dirs[seed].with_suffix(".log"), "a")  # noqa: SIM115
            cmd = _run_args(seed, tasks, args.self_edits, run_dirs[seed], args.overrides)
            running[seed] = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log_files[seed], stderr=log_files[seed])
        for seed, proc in list(running.items()):
            if proc.poll() is not None:
                if proc.returncode != 0:
                    raise SystemExit(f"seed {seed} exited {proc.returncode}; see {run_dirs[seed].with_suffix('.log')}")
                del running[seed]
        time.sleep(1.0)
    wall = time.perf_counter() - started
    per_seed = []
    for seed in args.seeds:
        store = RunStore(run_dirs[seed])
        cfg = build_config(store.read_manifest()["config"])  # type: ignore[index]
        per_seed.append(report_data(cfg, store))
    pooled = _pool(per_seed)
    print(f"SmolLM2-135M, {len(tasks)} tasks of {SUBSET}, {args.self_edits} self-edits per task, seeds {args.seeds}")
    print(_table(pooled))
    print(
        json.dumps(
            {
                "bench": "repro_arc_small",
                "tasks": len(tasks),
                "seeds": args.seeds,
                "self_edits": args.self_edits,
                "wall_seconds_this_call": round(wall, 1),
                "conditions": pooled,
                "run_dirs": {str(s): str(d) for s, d in run_dirs.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
