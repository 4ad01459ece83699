"""The generation protocol shared by every backend: requests in, outputs out, in the same order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

# `adapter` value meaning "the weights that are in the adapter slot right now" (hf backend only): lets a pipeline
# generate right after training without saving and reloading the adapter.
ACTIVE_ADAPTER = "@active"


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt (chat messages, or a plain `text` a base model continues) and how to continue it.

    adapter: None = the base model; a folder written by AdapterSlot.save; or ACTIVE_ADAPTER (hf backend).
    temperature 0 = greedy. `seed` makes sampling reproducible per request, whatever else shares its batch.
    """

    messages: Sequence[Mapping[str, str]] = ()
    adapter: str | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    n: int = 1
    seed: int = 0
    return_logprobs: bool = False
    # Constrained decoding: only tokens whose text consists of these characters (and end-of-turn) may be generated,
    # e.g. a grid's alphabet; None = unconstrained. Log-probabilities stay those of the unconstrained model.
    allowed_chars: str | None = None
    # The start of the reply, written for the model: generation continues after it, and it is not part of the
    # returned text (structured sampling fills a template this way).
    prefill: str = ""
    # The reply is exactly one of these strings: every generated token continues one of them, and generation ends
    # as soon as one is complete and no other continues it (a choice sampled with the model's own probabilities).
    choices: tuple[str, ...] | None = None
    # A plain-text prompt instead of messages (completion style: no chat template), tokenized with the tokenizer's
    # own special tokens.
    text: str | None = None
    # Generation ends as soon as the text produced contains one of these; the returned text stops before it
    # (finish reason "stop"). E.g. "\n" for a base model's one-line answer, which would otherwise go on.
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.text is not None and self.messages:
            raise ValueError("GenerationRequest: give messages or text, not both")
        if self.text is None and not self.messages:
            raise ValueError("GenerationRequest: messages is empty (give messages, or a plain-text prompt as text)")
        if self.text is not None and not self.text:
            raise ValueError("GenerationRequest: text is empty")
        if any(not s for s in self.stop):
            raise ValueError("GenerationRequest: stop strings must be non-empty")
        if self.temperature < 0:
            raise ValueError(f"GenerationRequest: temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"GenerationRequest: top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"GenerationRequest: max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.n < 1:
            raise ValueError(f"GenerationRequest: n must be >= 1, got {self.n}")
        if self.allowed_chars is not None and not self.allowed_chars:
            raise ValueError("GenerationRequest: allowed_chars is empty (None means unconstrained)")
        if self.choices is not None and (not self.choices or not all(self.choices)):
            raise ValueError("GenerationRequest: choices must be non-empty strings (None means unconstrained)")
        if self.choices is not None and self.allowed_chars is not None:
            raise ValueError("GenerationRequest: give choices or allowed_chars, not both")
        if self.temperature == 0 and self.n > 1:
            raise ValueError("GenerationRequest: n > 1 with greedy decoding gives n identical samples; sample instead")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class GenerationOutput:
    """The n completions of one request. Token counts include the end-of-turn token when one was generated.

    logprobs (when asked): per completion, the log-probability of each generated token under the model's
    unmodified distribution (before temperature and top-p).
    """

    texts: tuple[str, ...]
    prompt_tokens: int
    completion_tokens: tuple[int, ...]
    finish_reasons: tuple[str, ...]  # "stop" (end of turn) or "length" (max_new_tokens reached)
    logprobs: tuple[tuple[float, ...], ...] | None = field(default=None)

    @property
    def text(self) -> str:
        return self.texts[0]


@runtime_checkable
class Generator(Protocol):
    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        """One output per request, in request order."""
        ...
