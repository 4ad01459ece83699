"""The knowledge domain's prompts, in this project's own wording (seal-reference §B2, §B4).

Self-edit prompts come in five variants and two styles. Completion style is for base models: one text that shows
the passage and ends with a header the model continues ("Implications:"). Chat style is for instruct models: one
user message asking for the same thing. `resolve_style("auto", …)` picks chat when the tokenizer has a chat
template. The question prompt asks for a direct, short answer; in completion style it ends with "Answer:", so a
teacher-forced gold answer continues it after one space.
"""

from __future__ import annotations

PROMPT_VARIANTS = ("implications", "implications-long", "implications-very-long", "rewrite", "self-qa")
STYLES = ("completion", "chat")
SAMPLING_TEMPERATURE = 1.0  # SEAL's self-edit sampling (§B2); the length limit comes from the platform profile
SAMPLING_TOP_P = 0.95

_REQUESTS = {
    "implications": (
        "Read the passage and list what follows from it: facts it states, facts it implies, and consequences "
        "of them. Write one short, self-contained statement per line, naming the people, places and things."
    ),
    "implications-long": (
        "Read the passage and write a long list of what follows from it: every fact it states or implies, "
        "restated on its own, and the consequences of those facts. One self-contained statement per line."
    ),
    "implications-very-long": (
        "Read the passage and write a very long, thorough list of everything that follows from it: each fact "
        "restated several ways, every implication, and what they mean together. One self-contained statement "
        "per line."
    ),
    "rewrite": (
        "Rewrite the passage in several different ways, each keeping every fact. Separate the versions with a "
        "line holding only ---."
    ),
    "self-qa": (
        "Turn the passage into questions and answers that together cover every fact in it. Use the form "
        '"Question 1: ... Answer: ...", then "Question 2: ... Answer: ...", and so on.'
    ),
}
_HEADERS = {
    "implications": "Implications:\n",
    "implications-long": "Implications:\n",
    "implications-very-long": "Implications:\n",
    "rewrite": "Rewritten passages:\n",
    "self-qa": "Question 1: ",
}


def _check(variant: str, style: str) -> None:
    if variant not in PROMPT_VARIANTS:
        raise ValueError(f"self-edit prompt {variant!r}: expected one of {', '.join(PROMPT_VARIANTS)}")
    if style not in STYLES:
        raise ValueError(f"prompt style {style!r}: expected one of {', '.join(STYLES)}")


def resolve_style(style: str, tokenizer_has_chat_template: bool) -> str:
    """`auto` → chat for a tokenizer with a chat template (instruct models), else completion (base models)."""
    if style == "auto":
        return "chat" if tokenizer_has_chat_template else "completion"
    _check(PROMPT_VARIANTS[0], style)
    return style


def self_edit_prompt(title: str, context: str, variant: str, style: str) -> str | list[dict[str, str]]:
    """The prompt that asks for a self-edit of one passage."""
    _check(variant, style)
    request = _REQUESTS[variant]
    if style == "chat":
        return [{"role": "user", "content": f"{request}\n\nPassage ({title}):\n{context}"}]
    return f"{request}\n\nPassage: {title}\n{context}\n\n{_HEADERS[variant]}"


def qa_prompt(title: str, question: str, style: str) -> str | list[dict[str, str]]:
    """The prompt a question is asked with, without the passage (§B4's shape, this project's words)."""
    _check(PROMPT_VARIANTS[0], style)
    text = f"Answer the question directly and in a few words.\nTopic: {title}\nQuestion: {question}"
    if style == "chat":
        return [{"role": "user", "content": text}]
    return f"{text}\nAnswer:"
