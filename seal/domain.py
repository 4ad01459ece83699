"""The seam between the one SEAL loop and its domains (ARC tasks, knowledge passages).

The loop (sample self-edits → apply and evaluate each → reward → select → behaviour-clone → merge) is written once,
in `runners/pipelines/seal_loop.py`; everything that differs between domains sits behind `Domain`. A domain is plain
functions over in-memory objects: it never sees a run directory, a config or a journal, so the same domain can be
driven by the chunked runner, a notebook or a test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

Message = Mapping[str, str]


@dataclass(frozen=True)
class Rejected:
    """Why a sampled self-edit cannot be used. Model garbage is data: it is recorded, never raised."""

    reason: str  # for people: what was wrong, with the offending value
    code: str  # for counting: not_json, missing_section, unknown_strategy, …


@dataclass
class Worker:
    """What one process holds to evaluate self-edits: the model, its tokenizer, the adapter slot on it and a
    generator. `close()` lets the model leave memory before the next iteration's model loads."""

    model: Any
    tokenizer: Any
    slot: Any  # ttt.lora.AdapterSlot
    generator: Any  # ttt.generate.Generator
    model_path: str = ""

    def close(self) -> None:
        import gc

        self.model = self.slot = self.generator = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover - torch is there whenever a Worker exists
            pass


@dataclass(frozen=True)
class Evaluation:
    """One inner loop's outcome: the domain's JSON-able result, the reward it earns, and, when the self-edit is
    unusable for a reason found only while applying it (e.g. over SEAL's step cap), that reason."""

    result: dict[str, Any]
    reward: float | None  # None: not scored (yet); never a silent 0
    rejected: Rejected | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Domain(Protocol):
    """A SEAL domain. Group ids are stable and valid unit names (`[A-Za-z0-9._-]+`)."""

    name: str

    def groups(self) -> list[str]:
        """Group ids (ARC tasks, passages) in their canonical order."""
        ...

    def prompt(self, group: str) -> Sequence[Message] | str:
        """What asks the model for a self-edit of `group`: chat messages, or a plain text that a base model
        continues (completion style)."""
        ...

    def parse(self, text: str) -> Any:
        """A typed self-edit, or `Rejected`. Must never raise on any text."""
        ...

    def template(self) -> Sequence[Any]:
        """The reply skeleton with holes for template decoding (`seal.structured`); only needed for
        `seal.decoding: template`."""
        ...

    def edit_key(self, edit: Any) -> str:
        """A canonical string for de-duplication."""
        ...

    def edit_to_dict(self, edit: Any) -> dict[str, Any]:
        """The self-edit as JSON, for the journal."""
        ...

    def evaluate(
        self,
        worker: Worker,
        group: str,
        edit: Any | None,
        *,
        view_seed: int,
        train_seed: int,
        base: dict[str, Any] | None = None,
    ) -> Evaluation:
        """Apply `edit` to the worker's model (None: no adaptation), answer the group's questions, score them.
        `base`: the group's evaluation without adaptation (the loop's `base` stage), for rewards relative to it."""
        ...

    def grading_items(self, group: str, evaluation: dict[str, Any], provenance: dict[str, Any]) -> list[dict[str, Any]]:
        """What `seal grade` must see to score this evaluation offline (one item per question/test input).
        Item ids start with `provenance["prefix"]` when it is given, so they are unique across a run."""
        ...


class DeferredRewards(Protocol):
    """A domain whose rewards can wait for verdicts graded elsewhere (the knowledge domain with `judge: deferred`).
    The loop then adds an export stage (a grading bundle) and a reward stage that waits for the imported verdicts."""

    def needs_verdicts(self) -> bool:
        """True when rewards are decided by verdicts that are graded outside the run."""
        ...

    def rescore(
        self, evaluation: dict[str, Any], verdicts: Mapping[str, str | None], base: dict[str, Any] | None, prefix: str
    ) -> tuple[dict[str, Any], float | None]:
        """The evaluation with the verdicts filled in (item ids under `prefix`), and its reward (None: unscored)."""
        ...
