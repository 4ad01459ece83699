"""Self-edits sampled into a template: the model chooses every value, the template writes the syntax.

SEAL samples free text and parses it. A 1B model mostly writes valid JSON; SmolLM2-135M almost never does (its
drafts break the syntax, invent keys, or write booleans as strings), so with free decoding a small-scale run has no
self-edit to apply and the RL loop has nothing to learn from. Template decoding keeps the choice with the model:
literal text (keys, braces, quotes) is written into the reply, and at each hole the model continues the reply so
far, sampled at the request's temperature, restricted to the hole's characters:

- a choice hole (`options`) is decoded token by token among the options only (`GenerationRequest.choices`), so the
  option is sampled with the model's own probabilities, renormalised over the options' spellings;
- a field hole (`chars`) takes what the model writes up to the terminator (the next literal's first character).

The text is then parsed like any other, so a value out of range is still rejected with its reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ttt.generate.base import GenerationOutput, GenerationRequest, Generator


@dataclass(frozen=True)
class Hole:
    """A value the model writes: one of `options`, or free text made of `chars` (at most `max_tokens` tokens)."""

    name: str
    options: tuple[str, ...] = ()
    chars: str = ""
    max_tokens: int = 8

    def __post_init__(self) -> None:
        if bool(self.options) == bool(self.chars):
            raise ValueError(f"hole {self.name!r}: give either options or chars")


Template = Sequence[str | Hole]


def _seed(seed: int, sample: int, hole: int) -> int:
    digest = hashlib.sha256(f"template:{seed}:{sample}:{hole}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def resolve_choice(text: str, options: Sequence[str]) -> str:
    """The option that `text` spells the start of (first match on the longest shared prefix); `text` itself when
    it starts none of them, so that the parser rejects it with a reason."""
    best, best_len = None, 0
    for option in options:
        shared = 0
        while shared < min(len(text), len(option)) and text[shared] == option[shared]:
            shared += 1
        if shared > best_len:
            best, best_len = option, shared
    return best if best is not None else text


class TemplateGenerator:
    """A `Generator` that answers each request by filling `template` (see the module docstring). All samples of
    all requests are decoded together, one batched generate call per hole."""

    def __init__(self, inner: Generator, template: Template) -> None:
        self.inner = inner
        self.template = list(template)
        for position, part in enumerate(self.template):
            if isinstance(part, Hole) and part.chars:
                following = self.template[position + 1] if position + 1 < len(self.template) else ""
                if not isinstance(following, str) or not following:
                    raise ValueError(f"hole {part.name!r}: a field hole must be followed by literal text")

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        rows = [(r, s) for r in requests for s in range(r.n)]
        replies = [""] * len(rows)
        tokens = [0] * len(rows)
        prompt_tokens: dict[int, int] = {}
        for position, part in enumerate(self.template):
            if isinstance(part, str):
                replies = [reply + part for reply in replies]
                continue
            following = self.template[position + 1] if position + 1 < len(self.template) else ""
            terminator = following[0] if isinstance(following, str) and following and part.chars else ""
            if part.options:
                constraint = {"choices": part.options, "max_new_tokens": max(len(o) for o in part.options) + 1}
            else:
                allowed = "".join(sorted(set(part.chars + terminator)))
                constraint = {"allowed_chars": allowed, "max_new_tokens": part.max_tokens}
            asks = [
                replace(
                    request,
                    n=1,
                    prefill=replies[i],
                    **constraint,  # type: ignore[arg-type]
                    seed=_seed(request.seed, sample, position),
                    return_logprobs=False,
                )
                for i, (request, sample) in enumerate(rows)
            ]
            outputs = self.inner.generate(asks)
            for i, output in enumerate(outputs):
                text = output.text
                tokens[i] += output.completion_tokens[0]
                prompt_tokens.setdefault(id(rows[i][0]), output.prompt_tokens)
                if part.options:
                    value = resolve_choice(text, part.options)
                else:
                    value = text.split(terminator, 1)[0] if terminator else text
                replies[i] += value
        out, start = [], 0
        for request in requests:
            mine = range(start, start + request.n)
            start += request.n
            out.append(
                GenerationOutput(
                    texts=tuple(replies[i] for i in mine),
                    prompt_tokens=prompt_tokens.get(id(request), 0),
                    completion_tokens=tuple(tokens[i] for i in mine),
                    finish_reasons=tuple("stop" for _ in mine),
                )
            )
        return out
