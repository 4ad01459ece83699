"""Tasks → chat messages: SEAL's TTT / inference format (the self-edit prompt lives in `seal/arc/prompt.py`).

Messages are plain ``{"role", "content"}`` dicts; the tokenizer's own chat template renders them elsewhere
(`ttt/examples.py`), so nothing here is model-specific and nothing depends on the date.

TTT / inference format (SEAL §A4): a system message asks the model to figure out the transformation; each
demo is written ``<input> -> <output>#``; the query is ``<test input> -> `` and the answer ``<test output>#``.
Where the demos go is `demo_placement`: ``user`` (default: the user turn holds the demos, then the query) or
``system`` (SEAL's code: the demos are appended to the system message and the user turn is just the query).
"""

from __future__ import annotations

from typing import Literal

from ttt.arc.grid import GridFormat, check_format, grid_to_text
from ttt.arc.tasks import ArcTask

Message = dict[str, str]
DemoPlacement = Literal["user", "system"]

IO_SEP = " -> "
ANSWER_END = "#"
_INSTRUCTION = (
    "Figure out the underlying transformation in the following examples and apply it to the test case. "
    "Here are some examples from this transformation, your answer must follow the format.\n"
)
_GRID_INTRO = {
    "nested": "The input-output grids are provided as python arrays:\n",
    "numpy": "The input-output grids are provided as python arrays:\n",
    "digits": "The input-output grids are provided as rows of digits, one line per row:\n",
}


def system_prompt(grid_format: GridFormat = "nested") -> str:
    return _INSTRUCTION + _GRID_INTRO[check_format(grid_format)]


def demos_text(task: ArcTask, grid_format: GridFormat = "nested") -> str:
    return "".join(
        f"{grid_to_text(d.input, grid_format)}{IO_SEP}{grid_to_text(d.output, grid_format)}{ANSWER_END}\n"
        for d in task.demos
        if d.output is not None
    )


def query_text(task: ArcTask, grid_format: GridFormat = "nested") -> str:
    return f"{grid_to_text(task.test.input, grid_format)}{IO_SEP}"


def answer_text(task: ArcTask, grid_format: GridFormat = "nested") -> str:
    if task.test.output is None:
        raise ValueError(f"task {task.task_id}: the test output is unknown, so there is no answer text")
    return f"{grid_to_text(task.test.output, grid_format)}{ANSWER_END}"


def task_to_messages(
    task: ArcTask,
    *,
    grid_format: GridFormat = "nested",
    include_answer: bool = True,
    demo_placement: DemoPlacement = "user",
) -> list[Message]:
    """System + user (+ assistant answer when `include_answer`) messages for one task.

    Training examples use ``include_answer=True`` (the loss mask comes from the message boundary); inference
    prompts use ``include_answer=False`` and the model continues after the user turn."""
    demos = demos_text(task, grid_format)
    if demo_placement == "user":
        messages = [
            {"role": "system", "content": system_prompt(grid_format)},
            {"role": "user", "content": demos + query_text(task, grid_format)},
        ]
    elif demo_placement == "system":
        messages = [
            {"role": "system", "content": system_prompt(grid_format) + demos},
            {"role": "user", "content": query_text(task, grid_format)},
        ]
    else:
        raise ValueError(f"unknown demo_placement {demo_placement!r}; expected 'user' or 'system'")
    if include_answer:
        messages.append({"role": "assistant", "content": answer_text(task, grid_format)})
    return messages
