"""Bounded, batched sampling of self-edits for one group (an ARC task, a passage), for any domain.

SEAL's driver asked for one sample per call and retried until enough parsed, which could loop forever on a model
that writes garbage. Here round 1 asks for all k samples in one generate call (one request with n = k, which the HF
generator decodes as one batch), each later round asks only for the number still missing, and the total number of
samples drawn is bounded by `max_attempts`. Every draw is recorded as an `Attempt` (text, token counts, finish
reason, and why it was rejected), so failures are data.

Each group always gets exactly k slots: the accepted attempts in draw order, then, when fewer than k were accepted
within the budget, rejected attempts in draw order. What a rejected slot becomes (SEAL trained it for 0 epochs) is
the pipeline's policy.

Seeds: round r uses a seed derived from (`seed`, r) by a hash, so a resumed or re-run group draws the same texts in
any process; the generator derives each row's seed from the request seed and the row index.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from seal.domain import Rejected
from ttt.generate.base import GenerationRequest, Generator

DUPLICATE = "duplicate"


@dataclass(frozen=True)
class SampleSettings:
    """How many self-edits a group needs and how they are sampled (defaults: SEAL's ARC sampling, §A3)."""

    k: int  # self-edits wanted per group
    temperature: float = 0.8
    top_p: float = 1.0
    max_new_tokens: int = 128
    max_attempts: int | None = None  # total samples drawn per group; None = 3 * k
    dedupe: bool = False  # an edit whose key equals an earlier accepted one is rejected as "duplicate"

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"SampleSettings: k must be >= 1, got {self.k}")
        if self.attempt_budget < self.k:
            raise ValueError(f"SampleSettings: max_attempts ({self.max_attempts}) must be >= k ({self.k})")
        if self.temperature <= 0:
            raise ValueError("SampleSettings: temperature must be > 0 (greedy decoding gives k identical self-edits)")

    @property
    def attempt_budget(self) -> int:
        return 3 * self.k if self.max_attempts is None else self.max_attempts


@dataclass(frozen=True)
class Attempt:
    """One sampled text and what became of it. `edit`: the parsed edit as a dict (accepted or duplicate), else None."""

    index: int  # draw order within the group, from 0
    round: int  # from 1
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length"
    accepted: bool
    reason: str | None  # None when accepted
    code: str | None  # the Rejected code, or "duplicate"
    edit: dict[str, Any] | None


@dataclass(frozen=True)
class SampleResult:
    attempts: tuple[Attempt, ...]
    slots: tuple[int, ...]  # k attempt indices: accepted ones first in draw order, then rejected ones in draw order
    rounds: int
    generate_calls: int

    @property
    def accepted(self) -> tuple[Attempt, ...]:
        return tuple(a for a in self.attempts if a.accepted)

    def slot_attempts(self) -> tuple[Attempt, ...]:
        """The k attempts behind the slots, in slot order."""
        return tuple(self.attempts[i] for i in self.slots)

    def to_dict(self) -> dict[str, Any]:
        return {
            "attempts": [dataclasses.asdict(a) for a in self.attempts],
            "slots": list(self.slots),
            "rounds": self.rounds,
            "generate_calls": self.generate_calls,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SampleResult:
        return cls(
            attempts=tuple(Attempt(**a) for a in data["attempts"]),
            slots=tuple(data["slots"]),
            rounds=data["rounds"],
            generate_calls=data["generate_calls"],
        )


def round_seed(seed: int, round_number: int) -> int:
    """The request seed of round `round_number` (from 1): a hash, the same in every process, never salted."""
    digest = hashlib.sha256(f"selfedit:{seed}:round:{round_number}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _default_to_dict(edit: Any) -> dict[str, Any]:
    if hasattr(edit, "to_dict"):
        return edit.to_dict()
    if dataclasses.is_dataclass(edit) and not isinstance(edit, type):
        return dataclasses.asdict(edit)
    if isinstance(edit, Mapping):
        return dict(edit)
    raise TypeError(
        f"parse returned {type(edit).__name__}: expected a Rejected or an edit (with to_dict(), a dataclass or a "
        "mapping); pass to_dict= for other edit types"
    )


def _default_key(edit: Any, as_dict: dict[str, Any]) -> str:
    return edit.key() if hasattr(edit, "key") else json.dumps(as_dict, sort_keys=True)


def sample_self_edits(
    generator: Generator,
    prompt: Sequence[Mapping[str, str]] | str,
    parse: Callable[[str], Any],
    settings: SampleSettings,
    *,
    seed: int,
    key: Callable[[Any], str] | None = None,
    to_dict: Callable[[Any], dict[str, Any]] | None = None,
) -> SampleResult:
    """Sample until k self-edits parse (or `settings.attempt_budget` samples are drawn) for `prompt`: chat messages,
    or a plain text that a base model continues (completion style).

    `parse(text)` returns an edit or a `Rejected`; any other result (None, a string …) is a bug: TypeError.
    `key(edit)` de-duplicates when `settings.dedupe` (default: `edit.key()`, else the edit's dict as JSON);
    `to_dict(edit)` stores the edit in its attempt (default: `edit.to_dict()`, a dataclass's fields, a mapping)."""
    budget = settings.attempt_budget
    attempts: list[Attempt] = []
    seen: dict[str, int] = {}  # edit key → index of the accepted attempt that had it
    accepted = rounds = 0
    while accepted < settings.k and len(attempts) < budget:
        rounds += 1
        n = min(settings.k - accepted, budget - len(attempts))
        source: dict[str, Any] = {"text": prompt} if isinstance(prompt, str) else {"messages": prompt}
        request = GenerationRequest(
            **source,
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_new_tokens=settings.max_new_tokens,
            n=n,
            seed=round_seed(seed, rounds),
        )
        outputs = generator.generate([request])
        if len(outputs) != 1 or len(outputs[0].texts) != n:
            got = [len(o.texts) for o in outputs]
            raise RuntimeError(f"generator returned {got} completions for one request with n={n}")
        output = outputs[0]
        for text, tokens, finish in zip(output.texts, output.completion_tokens, output.finish_reasons):
            result = parse(text)
            edit, reason, code = None, None, None
            if isinstance(result, Rejected):
                reason, code = result.reason, result.code
                if finish == "length":
                    reason += f" (the reply was cut off at {settings.max_new_tokens} new tokens)"
            else:
                edit = (to_dict or _default_to_dict)(result)
                if not isinstance(edit, dict):
                    raise TypeError(f"to_dict returned {type(edit).__name__}, expected a dict")
                if settings.dedupe:
                    edit_key = key(result) if key is not None else _default_key(result, edit)
                    if edit_key in seen:
                        reason, code = f"the same edit as attempt {seen[edit_key]}", DUPLICATE
                    else:
                        seen[edit_key] = len(attempts)
            ok = code is None
            accepted += ok
            attempts.append(
                Attempt(len(attempts), rounds, text, output.prompt_tokens, tokens, finish, ok, reason, code, edit)
            )
    chosen = [a.index for a in attempts if a.accepted]
    chosen += [a.index for a in attempts if not a.accepted][: settings.k - len(chosen)]
    return SampleResult(tuple(attempts), tuple(chosen), rounds, rounds)
