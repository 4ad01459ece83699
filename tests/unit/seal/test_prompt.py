"""The ARC self-edit prompt (SEAL §A3): demos as digit rows, then the instruction; no test input, no date."""

from __future__ import annotations

from seal.arc.prompt import self_edit_messages
from tests.unit.arc.conftest import make_task

TASK = make_task(([[1, 2]], [[2, 1]]), ([[3, 0], [0, 3]], [[0, 3], [3, 0]]), ([[5, 6]], [[6, 5]]))


def test_self_edit_prompt_carries_no_dates_or_model_tokens():
    text = "".join(m["content"] for m in self_edit_messages(TASK))
    assert "<|" not in text and "2025" not in text and "2026" not in text


def test_self_edit_prompt_lists_demos_as_digit_rows_then_the_instruction():
    system, user = self_edit_messages(TASK, instruction="PICK A RECIPE")
    assert system["role"] == "system" and "correct output" in system["content"]
    assert user["content"] == (
        "Input:\n1 2\n\nOutput:\n2 1\n\nInput:\n3 0\n0 3\n\nOutput:\n0 3\n3 0\n\n------\n\nPICK A RECIPE"
    )
    default = self_edit_messages(TASK)[1]["content"]
    for field in (
        "use_basic_augmentations",
        "use_repeat_augmentations",
        "train_using_output_tokens",
        "num_train_epochs",
    ):
        assert field in default
    assert "5 6" not in default  # the test input is not part of the self-edit prompt
