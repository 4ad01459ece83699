"""ReST-EM's E-step for SEAL: which self-edits are behaviour-cloned, and the SFT rows they become.

SEAL (ARC, §A7) clones every rewarded (task, k) pair with no de-duplication and no cap per task; the knowledge
domain (§B6) takes the top-1 completion per passage. Both rules and a plain threshold live here, for any domain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from seal.domain import Message

SELECTION_RULES = ("rewarded", "top1", "threshold")


@dataclass(frozen=True)
class Scored:
    """One sampled self-edit with its reward (None: unscored, which no rule ever selects)."""

    group: str
    k: int
    reward: float | None
    prompt: tuple[Message, ...] | str  # chat messages, or the plain text a base model continued
    response: str


def select(scored: Sequence[Scored], rule: str, threshold: float = 1.0) -> list[Scored]:
    """The self-edits to clone, in (group, k) order.

    rewarded: every self-edit with a reward > 0 (SEAL ARC's binary reward: every solved pair).
    top1: per group, the highest-rewarded self-edit (ties: the lowest k), whatever its reward (SEAL knowledge).
    threshold: every self-edit with reward >= threshold.
    """
    if rule not in SELECTION_RULES:
        raise ValueError(f"selection rule {rule!r}: expected one of {SELECTION_RULES}")
    ordered = sorted((s for s in scored if s.reward is not None), key=lambda s: (s.group, s.k))
    if rule == "rewarded":
        return [s for s in ordered if s.reward > 0]  # type: ignore[operator]
    if rule == "threshold":
        return [s for s in ordered if s.reward >= threshold]  # type: ignore[operator]
    best: dict[str, Scored] = {}
    for s in ordered:
        if s.group not in best or s.reward > best[s.group].reward:  # type: ignore[operator]
            best[s.group] = s
    return [best[g] for g in sorted(best)]


def sft_messages(item: Scored) -> list[dict[str, str]]:
    """The conversation the model is cloned on: the self-edit prompt, then the self-edit as its answer."""
    if isinstance(item.prompt, str):
        raise TypeError("sft_messages: this self-edit was sampled from a plain-text prompt, not a conversation")
    return [*(dict(m) for m in item.prompt), {"role": "assistant", "content": item.response}]


def sft_rows(selected: Sequence[Scored], tokenizer: Any) -> list[Any]:
    """Token ids with the loss on the response only (ttt/examples.py): for a conversation, the final turn and its
    end-of-turn token, from the chat template's own message boundaries; for a plain-text prompt, the completion
    and an EOS (so the cloned model learns where a self-edit ends)."""
    from ttt import examples

    return [
        examples.encode_completion(tokenizer, item.prompt, item.response, add_eos=True)
        if isinstance(item.prompt, str)
        else examples.encode_messages(tokenizer, sft_messages(item), loss="output_tokens")
        for item in selected
    ]
