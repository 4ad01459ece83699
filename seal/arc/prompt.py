"""The ARC self-edit prompt (SEAL §A3): the model reads a task's demos and answers with a JSON training recipe.

It belongs to the outer loop (what the model is asked to write), not to the inner loop that applies a recipe, so it
lives in `seal/` and `ttt/` never sees it. Messages are plain ``{"role", "content"}`` dicts rendered later by the
tokenizer's own chat template: no model-specific tokens and no date.
"""

from __future__ import annotations

from seal.structured import Hole
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


# The menus of template decoding: SEAL's free-form numbers as choices around its oracle recipe (lr 1e-4, 2 epochs).
LEARNING_RATES = ("1e-5", "3e-5", "1e-4", "3e-4", "1e-3")
EPOCHS = ("1", "2", "3", "4", "5", "6", "8", "10")


def _choice(name: str) -> Hole:
    return Hole(name, options=("true", "false"))


# The reply skeleton of SELF_EDIT_INSTRUCTION with a hole for every value, for template decoding
# (`seal.decoding: template`, see seal/structured.py): the model picks each value, the template writes the JSON.
SELF_EDIT_TEMPLATE: tuple[str | Hole, ...] = (
    '{\n  "data_generation": {\n    "use_basic_augmentations": ',
    _choice("use_basic_augmentations"),
    ',\n    "use_size_augmentations": ',
    _choice("use_size_augmentations"),
    ',\n    "use_chain_augmentations": ',
    _choice("use_chain_augmentations"),
    ',\n    "use_repeat_augmentations": ',
    _choice("use_repeat_augmentations"),
    '\n  },\n  "training": {\n    "strategy": "train_using_',
    Hole("strategy", options=("all", "output")),
    '_tokens",\n    "learning_rate": ',
    Hole("learning_rate", options=LEARNING_RATES),
    ',\n    "num_train_epochs": ',
    Hole("num_train_epochs", options=EPOCHS),
    "\n  }\n}",
)
