"""The small-scale SEAL knowledge reproduction: `configs/experiments/repro_knowledge_small.yaml`, chunked over
`--parallel` worker processes on one run directory, then the table with paired intervals over questions.

    python bench/repro_knowledge_small.py --source PATH/squad_val.json [--eval 100] [--train 50] [--self-edits 3]
        [--epochs 5] [--parallel 2] [--seed 0] [--set KEY=VALUE ...]

The full size is the config's (100 evaluation passages, 50 training passages, 3 self-edits). The run is an
ordinary resumable run directory (`--run-dir`, default runs/repro-knowledge-small-…): a killed reproduction
continues where it stopped. Workers that reach a barrier exit 75 ("waiting"); they are started again until every
stage is recorded.
Last line: {"bench": "repro_knowledge_small", "conditions": [...], "wall_seconds": …, …}
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
EXIT_WAITING = 75


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", default=str(REPO.parent / "shared" / "data" / "squad_val.json"))
    parser.add_argument("--eval", type=int, default=100, help="evaluation passages [0, N) of the seed-42 shuffle")
    parser.add_argument("--train", type=int, default=50, help="RL training passages [100, 100 + N)")
    parser.add_argument("--self-edits", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--allow-config-change", action="store_true", help="resume a run whose config changed (passed to the workers)"
    )
    args = parser.parse_args()
    if not Path(args.source).exists():
        raise SystemExit(f"{args.source} does not exist: give SQuAD dev in SEAL's layout with --source")
    if args.eval > 100:
        raise SystemExit("--eval must be <= 100: the training passages start at 100")
    run_dir = Path(
        args.run_dir
        or REPO / "runs" / f"repro-knowledge-small-e{args.eval}-t{args.train}-k{args.self_edits}-s{args.seed}"
    )
    overrides = [
        f"knowledge.source={Path(args.source).resolve()}",
        f"knowledge.eval_passages=[0, {args.eval}]",
        f"knowledge.train_passages=[100, {100 + args.train}]",
        f"knowledge.train.epochs={args.epochs}",
        f"seal.self_edits={args.self_edits}",
        f"seal.max_attempts={2 * args.self_edits}",
        f"run.seed={args.seed}",
        *args.overrides,
    ]
    base = [sys.executable, "-m", "runners.cli", "knowledge", "rl", "repro_knowledge_small", "--run-dir", str(run_dir),
            "--profile", "cpu", "--no-progress", *(x for o in overrides for x in ("--set", o)),
            *(["--allow-config-change"] if args.allow_config_change else [])]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    rounds = 0
    while True:
        rounds += 1
        chunks = [[*base, "--chunk", f"{k}/{args.parallel}"] for k in range(1, args.parallel + 1)]
        procs = [
            subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for cmd in chunks
        ]
        codes = []
        for proc in procs:
            _, err = proc.communicate()
            codes.append(proc.returncode)
            if proc.returncode not in (0, EXIT_WAITING):
                raise SystemExit(f"a worker failed ({proc.returncode}): {err.decode()[-3000:]}")
        if all(code == 0 for code in codes):
            break
        if rounds > 50:
            raise SystemExit("the workers kept waiting: see the run directory's logs")
    wall = time.perf_counter() - started
    final = subprocess.run(base, cwd=REPO, env=env, capture_output=True, text=True)
    print(final.stdout)

    from runners.config import load_config
    from runners.knowledge_report import collect, summary_rows
    from runners.store import RunStore

    cfg = load_config("repro_knowledge_small", "cpu", overrides)
    rows = summary_rows(collect(cfg, RunStore(run_dir)))
    print(
        json.dumps(
            {
                "bench": "repro_knowledge_small",
                "conditions": rows,
                "eval_passages": args.eval,
                "train_passages": args.train,
                "self_edits": args.self_edits,
                "epochs": args.epochs,
                "seed": args.seed,
                "parallel": args.parallel,
                "wall_seconds_this_invocation": round(wall, 1),
                "run_dir": str(run_dir),
                "overrides": overrides,
            }
        )
    )


if __name__ == "__main__":
    main()
