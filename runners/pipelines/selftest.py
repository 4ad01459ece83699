"""A stage of real but cheap units (PBKDF2 of the unit id), used to exercise the run store, chunks and claims.

Each unit's result depends only on the run seed and the unit id, so an interrupted-and-resumed run must end with
exactly the journal of an uninterrupted one.
"""

from __future__ import annotations

import hashlib

from runners.config import Config
from runners.stage import Outcome, ProcessFn, StageSpec, unit_seed
from runners.store import RunStore

CONFIG_SECTIONS = ("selftest", "run")
CONFIG_EXCLUDE: tuple[str, ...] = ()  # runners.config.OPERATIONAL_KEYS are excluded from every identity


def stages(cfg: Config, store: RunStore) -> list[StageSpec]:
    units = [f"u{i:05d}" for i in range(cfg.selftest.units)]

    def make_processor() -> ProcessFn:
        def process(unit: str) -> Outcome:
            if unit in cfg.selftest.fail_units:
                raise RuntimeError(f"selftest.fail_units names {unit}")
            seed = unit_seed(cfg.run.seed, unit)
            digest = hashlib.pbkdf2_hmac("sha256", unit.encode(), str(seed).encode(), cfg.selftest.iterations)
            if not cfg.selftest.artifact_kib:
                return Outcome("ok", {"digest": digest.hex()[:32]})
            with store.write_artifact("hash", unit) as folder:  # deterministic bytes: a pulled copy must match
                (folder / "blob.bin").write_bytes(_blob(digest, cfg.selftest.artifact_kib * 1024))
            return Outcome("ok", {"digest": digest.hex()[:32]}, artifacts={"blob": f"artifacts/hash/{unit}/blob.bin"})

        return process

    return [StageSpec("hash", units, make_processor)]


def _blob(seed: bytes, size: int) -> bytes:
    out = bytearray()
    block = seed
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def summarize(cfg: Config, store: RunStore) -> str:
    records = store.records("hash")
    ok = sum(r.status == "ok" for r in records.values())
    return f"selftest: {ok}/{cfg.selftest.units} units recorded in {store.root}"
