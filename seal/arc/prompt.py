"""The ARC self-edit prompt (SEAL §A3): the model reads a task's demos and answers with a JSON training recipe.

It belongs to the outer loop (what the model is asked to write), not to the inner loop that applies a recipe, so it
lives in `seal/` and `ttt/` never sees it. Messages are plain ``{"role", "content"}`` dicts rendered later by the
tokenizer's own chat template: no model-specific tokens and no date.
"""

from __future__ import annotations

from ttt.arc import ArcTask, Grid, Message

SELF_EDIT_SYSTEM = "You are a helpful assistant that gives the correct output for the given task immediately."

SELF_EDIT_INSTRUCTION = """You configure a model training pipeline by choosing from predefined tools.

Make two decisions:

1. Data generation tools. For each of these, choose true or false:
    - use_basic_augmentations
    - use_size_augmentations
    - use_chain_augmentations
    - use_repeat_augmentations

2. Training configuration. Choose one strategy:
    - "train_using_all_tokens"
    - "train_using_output_tokens"

Also give:
    - learning_rate (float)
    - num_train_epochs (integer)

Reply with only a valid JSON object: no explanation, no markdown, no other text.
Write booleans as lowercase true/false.

Example output:

{
  "data_generation": {
    "use_basic_augmentations": ...,
    "use_size_augmentations": ...,
    "use_chain_augmentations": ...,
    "use_repeat_augmentations": ...
  },
  "training": {
    "strategy": ...,
    "learning_rate": ...,
    "num_train_epochs": ...
  }
}
"""


def _spaced_rows(grid: Grid) -> str:
    return "".join(" ".join(map(str, row)) + "\n" for row in grid.rows)


def self_edit_user_text(task: ArcTask, instruction: str = SELF_EDIT_INSTRUCTION) -> str:
    """The demos as ``Input:`` / ``Output:`` blocks of space-separated digit rows, blank-line separated, then
    a ``------`` separator and the instruction (no test input: the recipe is chosen from the demos)."""
    blocks = "".join(
        f"Input:\n{_spaced_rows(d.input)}\nOutput:\n{_spaced_rows(d.output)}\n"
        for d in task.demos
        if d.output is not None
    )
    return f"{blocks}------\n\n{instruction}"


def self_edit_messages(
    task: ArcTask, *, instruction: str = SELF_EDIT_INSTRUCTION, system: str = SELF_EDIT_SYSTEM
) -> list[Message]:
    """System + user messages asking the model for a self-edit (generation continues after the user turn)."""
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": self_edit_user_text(task, instruction)},
    ]
