"""Stage names and unit ids become file and folder names (journals, claims, work folders), so they are checked
before anything is written: a `/` or `..` in an id would otherwise crash a claim or escape the run directory."""

from __future__ import annotations

import re
from collections.abc import Iterable

_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
RULE = "letters, digits, '.', '_' and '-', not starting with '.'"


class InvalidNameError(ValueError):
    """A stage name or unit id that cannot be used as a file name."""


def check_stage_name(stage: str) -> None:
    if not isinstance(stage, str) or not _NAME.fullmatch(stage):
        raise InvalidNameError(f"stage name {stage!r} is not valid: use {RULE}")


def check_unit_ids(stage: str, units: Iterable[str]) -> list[str]:
    """The ids as a list, each valid and none repeated; the error names the stage and the id."""
    out = list(units)
    seen: set[str] = set()
    for unit in out:
        if not isinstance(unit, str) or not _NAME.fullmatch(unit):
            raise InvalidNameError(f"stage {stage}: unit id {unit!r} is not valid: use {RULE}")
        if unit in seen:
            raise InvalidNameError(f"stage {stage}: unit id {unit!r} appears twice")
        seen.add(unit)
    return out
