"""Chat messages → token ids and loss labels, with the tokenizer's own chat template, for any tokenizer.

The loss mask is found from message boundaries, never from model-specific token ids: the conversation without its
final assistant turn is rendered with a generation prompt, and every token after that prefix belongs to the answer.
The rendered text already carries whatever BOS the template wants, so it is tokenized without adding special tokens
again (adding them is how SEAL's published code ends up with a doubled BOS).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

IGNORE_INDEX = -100
LossStrategy = Literal["output_tokens", "all_tokens"]
LOSS_STRATEGIES: tuple[str, ...] = ("output_tokens", "all_tokens")

# Llama 3.x templates print today's date unless given one: fix it so the same messages give the same tokens forever.
TEMPLATE_KWARGS: dict[str, Any] = {"date_string": "26 Jul 2024"}

Message = Mapping[str, str]


@dataclass(frozen=True)
class EncodedExample:
    """One training sequence: `labels[i]` is the target of position i (IGNORE_INDEX = no loss), unshifted."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.labels):
            raise ValueError(f"input_ids ({len(self.input_ids)}) and labels ({len(self.labels)}) differ in length")

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def num_loss_tokens(self) -> int:
        """Tokens that are predicted with a loss (the first position is never predicted)."""
        return sum(1 for label in self.labels[1:] if label != IGNORE_INDEX)


def _check_messages(messages: Sequence[Message]) -> list[dict[str, str]]:
    if not messages:
        raise ValueError("messages: empty conversation")
    checked = []
    for index, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise ValueError(f"messages[{index}]: needs string 'role' and 'content', got {dict(message)!r}")
        checked.append({"role": role, "content": content})
    return checked


def render_chat(tokenizer: Any, messages: Sequence[Message], *, add_generation_prompt: bool = False) -> str:
    """The conversation as text, exactly as the tokenizer's chat template writes it."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template")
    return tokenizer.apply_chat_template(
        _check_messages(messages), tokenize=False, add_generation_prompt=add_generation_prompt, **TEMPLATE_KWARGS
    )


def _tokenize(tokenizer: Any, text: str) -> list[int]:
    # The template wrote any BOS it wants into the text: adding special tokens here would double it.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def render_prompt(tokenizer: Any, messages: Sequence[Message]) -> str:
    """The prompt text for generation: the conversation followed by the assistant's turn header."""
    return render_chat(tokenizer, messages, add_generation_prompt=True)


def encode_prompt(tokenizer: Any, messages: Sequence[Message], prefill: str = "") -> list[int]:
    """Token ids of `render_prompt(messages)`, followed by `prefill`: the start of the assistant's reply, which
    generation continues (tokenized together with the prompt, as the model would have seen it)."""
    return _tokenize(tokenizer, render_prompt(tokenizer, messages) + prefill)


def count_tokens(tokenizer: Any, messages: Sequence[Message], *, add_generation_prompt: bool = False) -> int:
    """How many tokens the rendered conversation takes."""
    return len(_tokenize(tokenizer, render_chat(tokenizer, messages, add_generation_prompt=add_generation_prompt)))


def special_token_ids(tokenizer: Any) -> frozenset[int]:
    """Ids of every special token: the named ones plus added tokens flagged special (e.g. Llama 3's <|eot_id|>)."""
    ids = set(tokenizer.all_special_ids)
    for token_id, added in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(added, "special", False):
            ids.add(int(token_id))
    return frozenset(ids)


def _answer_span(tokenizer: Any, messages: list[dict[str, str]], full_ids: list[int]) -> tuple[int, int]:
    """(start, end) token positions of the final assistant turn in `full_ids`, end exclusive.

    start: the first token after the prompt prefix (the conversation minus its last turn, with a generation prompt).
    end: just after the turn's end-of-turn token, the first special token after start; nothing after it is kept.
    """
    prefix_text = render_chat(tokenizer, messages[:-1], add_generation_prompt=True)
    full_text = render_chat(tokenizer, messages)
    if not full_text.startswith(prefix_text):
        raise ValueError(
            "chat template renders the prompt differently with and without the final assistant turn; "
            "cannot find the answer boundary from messages"
        )
    prefix_ids = _tokenize(tokenizer, prefix_text)
    start = 0
    # A token may merge across the boundary; the merged token then counts as the answer's first token.
    while start < min(len(prefix_ids), len(full_ids)) and prefix_ids[start] == full_ids[start]:
        start += 1
    special = special_token_ids(tokenizer)
    end = len(full_ids)
    for position in range(start, len(full_ids)):
        if full_ids[position] in special:
            end = position + 1
            break
    return start, end


def encode_messages(
    tokenizer: Any, messages: Sequence[Message], *, loss: LossStrategy = "output_tokens"
) -> EncodedExample:
    """Token ids and labels for one conversation.

    `output_tokens`: loss only on the final assistant turn, including its end-of-turn token.
    `all_tokens`: loss on every token of the conversation.
    Text the template puts after the final end-of-turn token (e.g. ChatML's newline) is dropped: it would otherwise
    teach the model to continue after the end of its turn.
    """
    if loss not in LOSS_STRATEGIES:
        raise ValueError(f"loss strategy {loss!r}: expected one of {LOSS_STRATEGIES}")
    checked = _check_messages(messages)
    full_ids = _tokenize(tokenizer, render_chat(tokenizer, checked))
    if checked[-1]["role"] != "assistant":
        if loss == "output_tokens":
            raise ValueError("loss 'output_tokens' needs a conversation that ends with an assistant message")
        return EncodedExample(tuple(full_ids), tuple(full_ids))
    start, end = _answer_span(tokenizer, checked, full_ids)
    ids = full_ids[:end]
    labels = list(ids) if loss == "all_tokens" else [IGNORE_INDEX] * start + ids[start:]
    return EncodedExample(tuple(ids), tuple(labels))


# ------------------------------------------------------------------------------------------------------------------
# Plain text (passages, implications, completion-style prompts): no chat template


def encode_plain(tokenizer: Any, text: str) -> list[int]:
    """Token ids of `text` with the tokenizer's own special tokens (a BOS where it adds one, once)."""
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def _boundary(tokenizer: Any, text: str, char: int, ids: list[int]) -> int:
    """The first token of `ids` (the encoding of `text`) that covers a character at or after `char`: a token that
    straddles the boundary belongs to the part after it."""
    if char <= 0:
        return 0
    if char >= len(text):
        return len(ids)
    if getattr(tokenizer, "is_fast", False):
        offsets = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)["offset_mapping"]
        for position, (start, end) in enumerate(offsets):
            if end > start and end > char:
                return position
        return len(ids)
    prefix = encode_plain(tokenizer, text[:char])  # slow tokenizers: the longest common prefix of the two encodings
    position = 0
    while position < min(len(prefix), len(ids)) and prefix[position] == ids[position]:
        position += 1
    return position


def encode_text(tokenizer: Any, text: str, *, loss_start: int | str = 0, add_eos: bool = False) -> EncodedExample:
    """One plain-text training sequence.

    `loss_start` 0: loss on every token (full-text loss); an int: on the tokens from that character on; a string:
    on the tokens after its first occurrence (SEAL's "mask everything up to this substring"). `add_eos`: an EOS with
    a loss at the end, so that the model learns where the text stops."""
    if isinstance(loss_start, str):
        found = text.find(loss_start)
        if found < 0:
            raise ValueError(f"encode_text: the loss starts after {loss_start!r}, which the text does not contain")
        char = found + len(loss_start)
    else:
        if loss_start < 0:
            raise ValueError(f"encode_text: loss_start must be >= 0, got {loss_start}")
        char = loss_start
    ids = encode_plain(tokenizer, text)
    start = _boundary(tokenizer, text, char, ids)
    labels = [IGNORE_INDEX] * start + ids[start:]
    if add_eos:
        if tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no EOS token")
        ids.append(int(tokenizer.eos_token_id))
        labels.append(int(tokenizer.eos_token_id))
    return EncodedExample(tuple(ids), tuple(labels))


def encode_completion(tokenizer: Any, prompt: str, completion: str, *, add_eos: bool = True) -> EncodedExample:
    """A completion-style pair: prompt and completion tokenized together (as the model reads them), the loss on the
    completion only (and an EOS after it)."""
    return encode_text(tokenizer, prompt + completion, loss_start=len(prompt), add_eos=add_eos)


def end_of_turn_ids(tokenizer: Any) -> frozenset[int]:
    """Token ids that end an assistant turn: the template's end-of-turn token plus EOS (EOS alone for a tokenizer
    without a chat template: a base model's text ends there)."""
    if getattr(tokenizer, "chat_template", None) is None:
        if tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r}: no chat template and no EOS")
        return frozenset({int(tokenizer.eos_token_id)})
    probe = [{"role": "user", "content": "ping"}, {"role": "assistant", "content": "pong"}]
    full_ids = _tokenize(tokenizer, render_chat(tokenizer, probe))
    start, end = _answer_span(tokenizer, probe, full_ids)
    ids = set()
    if end > start and full_ids[end - 1] in special_token_ids(tokenizer):
        ids.add(full_ids[end - 1])
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if not ids:
        raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r}: no end-of-turn or EOS token")
    return frozenset(ids)
