"""A two-stage pipeline shaped like one RL iteration, for end-to-end tests only (registered by `rl_cli`).

`inner`: two units per task (`t<i>.k<j>`, grouped by task), cheap PBKDF2 work, a checkpoint in the unit's work
folder. `select`: one unit computed when the stage starts, behind a barrier on `inner`. Environment knobs make a
unit hang (to be SIGKILLed) or the select unit slow (so two workers overlap)."""

from __future__ import annotations

import hashlib
import os
import time

from runners.config import Config
from runners.stage import Outcome, ProcessFn, StageSpec
from runners.store import RunStore

CONFIG_SECTIONS = ("selftest",)


def stages(cfg: Config, store: RunStore) -> list[StageSpec]:
    units = [f"t{i}.k{j}" for i in range(cfg.selftest.units) for j in range(2)]

    def make_inner() -> ProcessFn:
        def process(unit: str) -> Outcome:
            ckpt = store.work_dir("inner", unit) / "ckpt"
            resumed = ckpt.exists()
            ckpt.write_text("half done")
            if os.environ.get("RLTEST_HANG_UNIT") == unit:
                time.sleep(120)  # killed here
            digest = hashlib.pbkdf2_hmac("sha256", unit.encode(), b"s", cfg.selftest.iterations).hex()[:16]
            return Outcome("ok", {"digest": digest, "resumed": resumed})

        return process

    def pick() -> list[str]:
        return [f"best-of-{len(store.records('inner'))}"]

    def make_select() -> ProcessFn:
        def process(unit: str) -> Outcome:
            time.sleep(float(os.environ.get("RLTEST_SELECT_SLEEP", "0")))
            ok = sum(r.status == "ok" for r in store.records("inner").values())
            return Outcome("ok", {"inner_ok": ok})

        return process

    inner = StageSpec("inner", units, make_inner, group=lambda u: u.split(".")[0])
    if os.environ.get("RLTEST_SKIP_SELECT"):
        return [inner]
    return [inner, StageSpec("select", pick, make_select, needs=("inner",), single=True)]


def summarize(cfg: Config, store: RunStore) -> str:
    return f"rltest: {len(store.records('inner'))} inner units, select {sorted(store.records('select'))}"
