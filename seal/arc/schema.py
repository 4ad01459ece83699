"""The ARC self-edit (SEAL §A3) as a typed value, and a parser that turns model text into one or says why not.

SEAL's driver ran ``json.loads`` on the reply, crashed on a missing section and retried garbage forever. Here the
parser never raises: every input gives an `ArcSelfEdit` or a `Rejected` with a code and a sentence naming what was
wrong. Small models wrap JSON in chatter or a ```json fence, so the first JSON object in the text that holds a
self-edit section is used; unknown extra keys are ignored (they cannot change what is trained).

Range checks are this project's (SEAL had none). `ParseLimits` defaults, and why:
- learning rate in [1e-6, 1e-2]: below 1e-6 LoRA barely moves in SEAL's ≤ 375 steps; above 1e-2 it diverges. SEAL's
  own oracle uses 1e-4, in the middle (log scale).
- epochs in [1, 20]: 0 epochs trains nothing (the base model, which a pipeline can run without a self-edit);
  over 20 epochs SEAL's step cap (375 steps, batch 2) switches training off for any task with ≥ 38 examples anyway.
What to do with a rejected self-edit (SEAL kept it and trained 0 epochs) is the pipeline's policy, not the parser's.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

from seal.domain import Rejected

Strategy = Literal["train_using_all_tokens", "train_using_output_tokens"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)

_FLAGS = (  # (field, JSON key under "data_generation")
    ("basic", "use_basic_augmentations"),
    ("size", "use_size_augmentations"),
    ("chain", "use_chain_augmentations"),
    ("repeat", "use_repeat_augmentations"),
)
_SECTIONS = ("data_generation", "training")
_MAX_CANDIDATES = 64  # "{" positions tried per text: bounds the work on adversarial input


@dataclass(frozen=True)
class ParseLimits:
    """Accepted ranges (inclusive) for the numeric fields; see the module docstring for the defaults' reasons."""

    lr_min: float = 1e-6
    lr_max: float = 1e-2
    epochs_min: int = 1
    epochs_max: int = 20


@dataclass(frozen=True)
class ArcSelfEdit:
    """One self-edit: which augmentation groups build the TTT data, which tokens carry the loss, lr and epochs."""

    basic: bool
    size: bool
    chain: bool
    repeat: bool
    strategy: Strategy
    learning_rate: float
    epochs: int

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"ArcSelfEdit: strategy {self.strategy!r}: expected one of {STRATEGIES}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"ArcSelfEdit: learning_rate must be a finite number > 0, got {self.learning_rate}")
        if self.epochs < 0:
            raise ValueError(f"ArcSelfEdit: epochs must be >= 0, got {self.epochs}")

    def to_dict(self) -> dict[str, Any]:
        """SEAL's nested JSON layout (what the model is asked to write)."""
        return {
            "data_generation": {key: getattr(self, name) for name, key in _FLAGS},
            "training": {
                "strategy": self.strategy,
                "learning_rate": self.learning_rate,
                "num_train_epochs": self.epochs,
            },
        }

    @classmethod
    def from_dict(cls, data: Any) -> ArcSelfEdit:
        """The inverse of `to_dict` (types checked, no range limits); ValueError says what is wrong."""
        result = _from_object(data, None)
        if isinstance(result, Rejected):
            raise ValueError(f"not an ARC self-edit ({result.code}): {result.reason}")
        return result

    def key(self) -> str:
        """A canonical string: two edits that train the same way have the same key (1e-4 and 0.0001 included)."""
        flags = "".join("1" if getattr(self, name) else "0" for name, _ in _FLAGS)
        return f"{flags}|{self.strategy}|lr={self.learning_rate!r}|epochs={self.epochs}"


def parse_self_edit(text: str, limits: ParseLimits = ParseLimits()) -> ArcSelfEdit | Rejected:
    """The self-edit in `text`, or why there is none. Never raises (a property test holds it to that)."""
    found = _find_object(text if isinstance(text, str) else str(text))
    return found if isinstance(found, Rejected) else _from_object(found, limits)


# ---------------------------------------------------------------------------------------------------------------


def _find_object(text: str) -> dict[str, Any] | Rejected:
    """The first JSON object in `text` that holds a self-edit section; failing that, the first JSON object.

    A candidate that fails to decode while a section name follows it is a broken self-edit (often cut off at the
    token limit): that is reported as not_json rather than falling back to an inner object that does decode."""
    decoder = json.JSONDecoder()
    broken_edit: str | None = None
    any_error: str | None = None
    first_object: dict[str, Any] | None = None
    position, tried = text.find("{"), 0
    while position != -1 and tried < _MAX_CANDIDATES:
        tried += 1
        try:
            value, end = decoder.raw_decode(text, position)
        except (ValueError, RecursionError) as error:
            any_error = any_error or str(error)
            if broken_edit is None and any(f'"{name}"' in text[position:] for name in _SECTIONS):
                broken_edit = str(error)
            position = text.find("{", position + 1)
            continue
        if isinstance(value, dict):
            if any(section in value for section in _SECTIONS):
                return value
            first_object = first_object if first_object is not None else value
        position = text.find("{", end)
    if broken_edit is None and first_object is not None:
        return first_object
    error = broken_edit or any_error
    if error is None:
        return Rejected("no JSON object found in the reply", "not_json")
    hint = ""
    if "True" in text or "False" in text:
        hint = " (booleans must be lowercase true/false)"
    elif "'" in text:
        hint = " (JSON strings need double quotes)"
    return Rejected(f"invalid JSON: {error}{hint}", "not_json")


def _section(data: dict[str, Any], name: str) -> dict[str, Any] | Rejected:
    if name not in data:
        return Rejected(f"missing section {name!r}", "missing_section")
    if not isinstance(data[name], dict):
        return Rejected(f"section {name!r} must be a JSON object, got {type(data[name]).__name__}", "bad_type")
    return data[name]


def _from_object(data: Any, limits: ParseLimits | None) -> ArcSelfEdit | Rejected:
    """Checks in a fixed order (sections, keys, types, strategy, ranges); the first problem is reported."""
    if not isinstance(data, dict):
        return Rejected(f"expected a JSON object, got {type(data).__name__}", "bad_type")
    sections = [_section(data, name) for name in _SECTIONS]
    for section in sections:
        if isinstance(section, Rejected):
            return section
    generation, training = sections
    assert isinstance(generation, dict) and isinstance(training, dict)
    for section_name, section, keys in (
        ("data_generation", generation, [key for _, key in _FLAGS]),
        ("training", training, ["strategy", "learning_rate", "num_train_epochs"]),
    ):
        missing = [key for key in keys if key not in section]
        if missing:
            return Rejected(f"section {section_name!r} is missing {', '.join(map(repr, missing))}", "missing_section")

    flags = {}
    for name, key in _FLAGS:
        value = generation[key]
        if not isinstance(value, bool):
            return Rejected(f"{key} must be true or false, got {value!r}", "bad_type")
        flags[name] = value
    strategy, lr, epochs = training["strategy"], training["learning_rate"], training["num_train_epochs"]
    if not isinstance(strategy, str):
        return Rejected(f"strategy must be a string, got {strategy!r}", "bad_type")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr):
        return Rejected(f"learning_rate must be a finite number, got {lr!r}", "bad_type")
    # An integral float (2.0) is an integer written loosely; 2.5 epochs is not an epoch count.
    if isinstance(epochs, float) and math.isfinite(epochs) and epochs.is_integer():
        epochs = int(epochs)
    if isinstance(epochs, bool) or not isinstance(epochs, int):
        return Rejected(f"num_train_epochs must be an integer, got {epochs!r}", "bad_type")
    if strategy not in STRATEGIES:
        return Rejected(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}", "unknown_strategy")
    if limits is not None:
        if not limits.lr_min <= lr <= limits.lr_max:
            return Rejected(
                f"learning_rate {lr!r} outside the allowed range [{limits.lr_min:g}, {limits.lr_max:g}]",
                "lr_out_of_range",
            )
        if not limits.epochs_min <= epochs <= limits.epochs_max:
            return Rejected(
                f"num_train_epochs {epochs} outside the allowed range [{limits.epochs_min}, {limits.epochs_max}]",
                "epochs_out_of_range",
            )
    elif lr <= 0 or epochs < 0:
        return Rejected(f"learning_rate must be > 0 and epochs >= 0, got {lr!r} and {epochs}", "bad_type")
    return ArcSelfEdit(**flags, strategy=strategy, learning_rate=float(lr), epochs=epochs)  # type: ignore[arg-type]
