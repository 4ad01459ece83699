"""A stage's unit list: given, or computed when the stage starts and then frozen.

A list computed from earlier results (which tasks to train on, say) must be the same for every worker and every
resume, even if recomputing it would now give something else: the first worker to compute it writes
`stages/<name>/units.json` (first writer wins), and everyone after reads that file and never calls the function.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from runners.names import check_unit_ids
from runners.store import RunStore, RunStoreError, _publish_once

if TYPE_CHECKING:
    from runners.stage import StageSpec


def frozen_units_path(store: RunStore, stage: str) -> Path:
    return store.stage_dir(stage) / "units.json"


def read_frozen_units(store: RunStore, stage: str) -> list[str] | None:
    path = frozen_units_path(store, stage)
    if not path.exists():
        return None
    try:
        units = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RunStoreError(f"{path} is not valid JSON ({exc}); it is written atomically, so restore it") from exc
    return check_unit_ids(stage, units)


def resolve_units(store: RunStore, spec: StageSpec) -> list[str]:
    """The stage's units: the static list, or the frozen list of a dynamic stage (computing and freezing it first)."""
    if not callable(spec.units):
        return list(spec.units)
    frozen = read_frozen_units(store, spec.name)
    if frozen is not None:
        return frozen
    units = check_unit_ids(spec.name, spec.units())  # a bad id fails here, before anything is frozen
    path = frozen_units_path(store, spec.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".units.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(units))
        fh.flush()
        os.fsync(fh.fileno())
    try:
        _publish_once(tmp, path)
    except FileExistsError:  # another worker froze it first: its list is the stage's list
        return read_frozen_units(store, spec.name) or []
    finally:
        tmp.unlink(missing_ok=True)
    return units
