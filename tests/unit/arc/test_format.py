"""Chat messages for TTT / inference (SEAL's format)."""

from __future__ import annotations

import pytest

from tests.unit.arc.conftest import make_task
from ttt.arc import system_prompt, task_to_messages

TASK = make_task(([[1, 2]], [[2, 1]]), ([[3, 0], [0, 3]], [[0, 3], [3, 0]]), ([[5, 6]], [[6, 5]]))


def test_seal_format_with_demos_in_the_user_turn():
    messages = task_to_messages(TASK)
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[0]["content"] == system_prompt("nested")
    assert messages[0]["content"].startswith("Figure out the underlying transformation")
    assert messages[1]["content"] == "[[1, 2]] -> [[2, 1]]#\n[[3, 0], [0, 3]] -> [[0, 3], [3, 0]]#\n[[5, 6]] -> "
    assert messages[2]["content"] == "[[6, 5]]#"


def test_seal_code_layout_puts_demos_in_the_system_message():
    messages = task_to_messages(TASK, demo_placement="system", include_answer=False)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"].endswith(
        "python arrays:\n[[1, 2]] -> [[2, 1]]#\n[[3, 0], [0, 3]] -> [[0, 3], [3, 0]]#\n"
    )
    assert messages[1]["content"] == "[[5, 6]] -> "


def test_digit_rows_and_numpy_formats():
    digits = task_to_messages(TASK, grid_format="digits")
    assert digits[1]["content"] == "12 -> 21#\n30\n03 -> 03\n30#\n56 -> "
    assert digits[2]["content"] == "65#"
    assert "rows of digits" in digits[0]["content"]
    numpy = task_to_messages(TASK, grid_format="numpy")
    assert numpy[1]["content"].startswith("[[1 2]] -> [[2 1]]#\n[[3 0]\n [0 3]] -> ")


def test_an_answer_is_required_for_training_messages_and_options_are_checked():
    with pytest.raises(ValueError, match="test output is unknown"):
        task_to_messages(TASK.without_answer())
    assert len(task_to_messages(TASK.without_answer(), include_answer=False)) == 2
    with pytest.raises(ValueError, match="demo_placement"):
        task_to_messages(TASK, demo_placement="assistant")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="grid format"):
        task_to_messages(TASK, grid_format="hex")  # type: ignore[arg-type]


def test_messages_carry_no_dates_or_model_tokens():
    text = "".join(m["content"] for m in task_to_messages(TASK))
    assert "<|" not in text and "2025" not in text and "2026" not in text
