"""The Ray executor's cost per unit, and what a second Ray worker buys on CPU-bound units.

    python bench/ray_executor.py [--cheap-units 300] [--slow-units 8] [--unit-s 1.0] [--repeats 2]

overhead: one selftest stage of `--cheap-units` near-free units (PBKDF2 with one iteration), run through
`run_stage` with the local executor and with the Ray executor on one worker (one actor: every unit is a round trip
driver → actor → driver, journal line and claim on the driver, as in a real run); `(ray - local) / units`, actor
start-up included (`overhead_ms_per_unit_actor_started`: the same once the actor runs).

speedup: `--slow-units` selftest units with the PBKDF2 iterations calibrated to `--unit-s` each, on 1 then 2 Ray
workers of a local 2-CPU instance (`run.ray_workers`), after one warm-up unit per worker has started the actors
(their start is in the overhead figure); `time(1) / time(2)`, best of `--repeats` alternating runs. Ray's own start
(`ray.init`, ~3 s) is outside both figures. The CPUs may be shared with other work, so the same units also run on 1
and 2 plain `multiprocessing` processes: `speedup_2_processes_plain` is what this machine allows at that moment, the
ceiling for the Ray figure (`load_average`: when the bench started).

Last line: {"bench": "ray_executor", "overhead_ms_per_unit": …, "speedup_2_workers": …, …}
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import hashlib
import json
import multiprocessing
import tempfile
import time
from pathlib import Path

from runners.config import load_config
from runners.pipelines import selftest
from runners.platform import resolve_profile
from runners.ray_executor import RaySession
from runners.stage import Selection, run_stage
from runners.store import RunStore


def _config(units: int, iterations: int, workers: int = 1):  # type: ignore[no-untyped-def]
    overrides = (f"selftest.units={units}", f"selftest.iterations={iterations}", f"run.ray_workers={workers}")
    return load_config("selftest", resolve_profile("cpu"), overrides)


def _stage_seconds(cfg, root: Path, make_executor=None, warm: int = 0) -> float:  # type: ignore[no-untyped-def]
    """Wall time of the stage's units; with `warm`, the first `warm` units run untimed first (they start the actors,
    which then serve the timed units)."""
    store = RunStore.open(root)
    store.start(cfg.to_dict(), "bench")
    spec = selftest.stages(cfg, store)[0]
    if warm:
        run_stage(store, spec, Selection(limit=warm), progress=False, make_executor=make_executor)
    started = time.perf_counter()
    summary = run_stage(store, spec, progress=False, make_executor=make_executor)
    seconds = time.perf_counter() - started
    store.close()
    assert summary.processed == cfg.selftest.units - warm and summary.by_status == {"ok": summary.processed}, summary
    return seconds


def _pbkdf2(iterations: int) -> None:
    hashlib.pbkdf2_hmac("sha256", b"u00000", b"0", iterations)


def _plain_seconds(processes: int, units: int, iterations: int) -> float:
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pool.map(_pbkdf2, [iterations] * units, chunksize=1)
    return time.perf_counter() - started


def _iterations_for(seconds: float) -> int:
    probe = 200_000
    started = time.perf_counter()
    hashlib.pbkdf2_hmac("sha256", b"u00000", b"0", probe)
    return max(1, int(probe * seconds / (time.perf_counter() - started)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cheap-units", type=int, default=300)
    parser.add_argument("--slow-units", type=int, default=8)
    parser.add_argument("--unit-s", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bray-", dir="/tmp") as tmp:
        work = Path(tmp)
        os.environ.setdefault("SEAL_RAY_TEMP_DIR", str(work / "r"))
        session = RaySession(None, num_cpus=2, num_gpus=0)
        try:
            cheap = _config(args.cheap_units, 1)
            local_s = _stage_seconds(cheap, work / "local")
            ray_s = _stage_seconds(cheap, work / "ray1", session.make_executor(cheap, work / "ray1"))
            session.release_actors()
            overhead_ms = 1000 * (ray_s - local_s) / args.cheap_units
            # The same with the actor already started (one untimed unit first): the steady per-unit round trip.
            warm_cfg = _config(args.cheap_units + 1, 1)
            warm_s = _stage_seconds(warm_cfg, work / "ray1w", session.make_executor(warm_cfg, work / "ray1w"), warm=1)
            session.release_actors()
            warm_ms = 1000 * (warm_s - local_s) / args.cheap_units
            print(json.dumps({"measure": "cheap_units", "units": args.cheap_units, "local_s": round(local_s, 3),
                              "ray_1_worker_s": round(ray_s, 3), "ray_1_warm_worker_s": round(warm_s, 3)}),
                  flush=True)  # fmt: skip

            iterations = _iterations_for(args.unit_s)
            times: dict[int, float] = {}
            for rep in range(args.repeats):  # alternating, best of each: the other jobs on the machine come and go
                for workers in (1, 2):
                    cfg = _config(args.slow_units + workers, iterations, workers)
                    root = work / f"slow{workers}-{rep}"
                    seconds = _stage_seconds(cfg, root, session.make_executor(cfg, root), warm=workers)
                    session.release_actors()
                    times[workers] = min(seconds, times.get(workers, float("inf")))
                    line = {"measure": "slow_units", "workers": workers, "units": args.slow_units, "rep": rep}
                    print(json.dumps({**line, "iterations": iterations, "seconds": round(seconds, 3)}), flush=True)
            reps = range(args.repeats)
            plain = {n: min(_plain_seconds(n, args.slow_units, iterations) for _ in reps) for n in (1, 2)}
            print(json.dumps({"measure": "plain_processes", "seconds": {n: round(t, 3) for n, t in plain.items()}}))
        finally:
            session.close()
    print(
        json.dumps(
            {
                "bench": "ray_executor",
                "overhead_ms_per_unit": round(overhead_ms, 2),
                "overhead_ms_per_unit_actor_started": round(warm_ms, 2),
                "speedup_2_workers": round(times[1] / times[2], 3),
                "unit_s_1_worker": round(times[1] / args.slow_units, 3),
                "cheap_units": args.cheap_units,
                "slow_units": args.slow_units,
                "speedup_2_processes_plain": round(plain[1] / plain[2], 3),
                "load_average": round(load, 2),
                "ray": __import__("ray").__version__,
                "targets": {"overhead_ms_per_unit": "<= 50", "speedup_2_workers": ">= 1.6"},
            }
        )
    )


if __name__ == "__main__":
    main()
