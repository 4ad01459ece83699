"""The Ray executor's cost per unit, and what a second Ray worker buys on CPU-bound units.

    python bench/ray_executor.py [--cheap-units 300] [--slow-units 8] [--unit-s 1.0]

overhead: one selftest stage of `--cheap-units` near-free units (PBKDF2 with one iteration), run through
`run_stage` with the local executor and with the Ray executor on one worker (one actor: every unit is a round trip
driver → actor → driver, journal line and claim on the driver, as in a real run); `(ray - local) / units`, actor
start-up included. speedup: `--slow-units` selftest units with the PBKDF2 iterations calibrated to `--unit-s` each,
on 1 then 2 Ray workers of a local 2-CPU instance (`run.ray_workers`); `time(1) / time(2)`. Ray's own start
(`ray.init`, ~3 s) is outside both figures. The CPUs are shared: on a machine where the other core is busy the
speedup says so (see `cpu_busy_other` — the load average when the bench starts).

Last line: {"bench": "ray_executor", "overhead_ms_per_unit": …, "speedup_2_workers": …, …}
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

from runners.config import load_config
from runners.pipelines import selftest
from runners.platform import resolve_profile
from runners.ray_executor import RaySession
from runners.stage import run_stage
from runners.store import RunStore


def _config(units: int, iterations: int, workers: int = 1):  # type: ignore[no-untyped-def]
    overrides = (f"selftest.units={units}", f"selftest.iterations={iterations}", f"run.ray_workers={workers}")
    return load_config("selftest", resolve_profile("cpu"), overrides)


def _stage_seconds(cfg, root: Path, make_executor=None) -> float:  # type: ignore[no-untyped-def]
    store = RunStore.open(root)
    store.start(cfg.to_dict(), "bench")
    spec = selftest.stages(cfg, store)[0]
    started = time.perf_counter()
    summary = run_stage(store, spec, progress=False, make_executor=make_executor)
    seconds = time.perf_counter() - started
    store.close()
    assert summary.processed == cfg.selftest.units and summary.by_status == {"ok": cfg.selftest.units}, summary
    return seconds


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
            print(json.dumps({"measure": "cheap_units", "units": args.cheap_units, "local_s": round(local_s, 3),
                              "ray_1_worker_s": round(ray_s, 3)}), flush=True)  # fmt: skip

            iterations = _iterations_for(args.unit_s)
            times = {}
            for workers in (1, 2):
                cfg = _config(args.slow_units, iterations, workers)
                root = work / f"slow{workers}"
                times[workers] = _stage_seconds(cfg, root, session.make_executor(cfg, root))
                session.release_actors()
                line = {"measure": "slow_units", "workers": workers, "units": args.slow_units, "iterations": iterations}
                print(json.dumps({**line, "seconds": round(times[workers], 3)}), flush=True)
        finally:
            session.close()
    print(
        json.dumps(
            {
                "bench": "ray_executor",
                "overhead_ms_per_unit": round(overhead_ms, 2),
                "speedup_2_workers": round(times[1] / times[2], 3),
                "unit_s_1_worker": round(times[1] / args.slow_units, 3),
                "cheap_units": args.cheap_units,
                "slow_units": args.slow_units,
                "cpu_busy_other": round(load, 2),
                "ray": __import__("ray").__version__,
                "targets": {"overhead_ms_per_unit": "<= 50", "speedup_2_workers": ">= 1.6"},
            }
        )
    )


if __name__ == "__main__":
    main()
