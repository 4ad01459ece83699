"""Value types shared by every SEAL domain."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rejected:
    """Why a model's self-edit text cannot be used: a sentence for people (`reason`) and a stable `code` for
    counting and tests. A rejection is data to record, never an exception: a small model writes garbage often."""

    reason: str
    code: str
