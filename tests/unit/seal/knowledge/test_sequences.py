"""SEAL's splitting rules on the shapes of its published completions (the shapes, not the texts)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from seal.domain import Rejected
from seal.knowledge.prompts import PROMPT_VARIANTS, qa_prompt, resolve_style, self_edit_prompt
from seal.knowledge.sequences import Implications, parse_completion, split_completion


def test_a_numbered_list_loses_its_preamble_line() -> None:
    text = "Here are some implications of the passage:\n1. The tower is tall.\n2. It is green.  \n\n3. It is old."
    assert split_completion(text) == ["1. The tower is tall.", "2. It is green.", "3. It is old."]


def test_a_bare_list_is_one_sequence_per_line_and_a_first_line_is_kept_without_a_numbered_second() -> None:
    assert split_completion("The tower is tall.\nIt flashes green.\n") == ["The tower is tall.", "It flashes green."]


def test_rewrites_split_on_dashes() -> None:
    text = "The tower, built in 1871, is tall.\n---\nBuilt in 1871, the tower is tall.\n---\n"
    assert split_completion(text) == ["The tower, built in 1871, is tall.", "Built in 1871, the tower is tall."]
    assert split_completion("a\nb\n---\nc", split_newlines=False) == ["a\nb", "c"]


def test_self_qa_blocks_give_one_sequence_per_pair_with_multiline_answers() -> None:
    text = "Who built it? Answer: Ottilie Brand.\nQuestion 2: When?\nAnswer: In 1871,\nafter the storm.\nQuestion 3: x"
    primed = "Question 1: " + text
    assert split_completion(primed) == [
        "Question: Who built it?\nAnswer: Ottilie Brand.",
        "Question: When?\nAnswer: In 1871,\nafter the storm.",
    ]


def test_windows_newlines_and_a_cut_off_last_line() -> None:
    text = "1. First fact.\r\n2. Second fact.\r\n3. The tower was built by the eng"
    assert split_completion(text) == ["1. First fact.", "2. Second fact.", "3. The tower was built by the eng"]


def test_only_a_preamble_or_nothing_is_rejected_as_empty() -> None:
    for text in ("Here are some implications:", "", "  \n---\n  "):
        result = parse_completion(text)
        assert isinstance(result, Rejected) and result.code == "empty"


def test_a_parsed_completion_has_a_key_and_a_dict() -> None:
    edit = parse_completion("a\nb")
    assert isinstance(edit, Implications) and edit.to_dict() == {"segments": ["a", "b"]}
    assert edit.key() == parse_completion("a\nb\n").key()  # type: ignore[union-attr]


@given(st.text())
def test_parsing_never_raises(text: str) -> None:
    result = parse_completion(text)
    assert isinstance(result, (Implications, Rejected))


def test_prompts_in_both_styles_and_the_question_prompt() -> None:
    for variant in PROMPT_VARIANTS:
        completion = self_edit_prompt("Varrow", "The tower is tall.", variant, "completion")
        chat = self_edit_prompt("Varrow", "The tower is tall.", variant, "chat")
        assert isinstance(completion, str) and "Varrow\nThe tower is tall." in completion
        assert isinstance(chat, list) and chat[0]["role"] == "user" and "The tower is tall." in chat[0]["content"]
    assert self_edit_prompt("T", "C", "implications", "completion").endswith("Implications:\n")  # type: ignore[union-attr]
    assert self_edit_prompt("T", "C", "self-qa", "completion").endswith("Question 1: ")  # type: ignore[union-attr]
    assert qa_prompt("Varrow", "Who?", "completion").endswith("Answer:")  # type: ignore[union-attr]
    assert resolve_style("auto", True) == "chat" and resolve_style("auto", False) == "completion"
    import pytest

    with pytest.raises(ValueError, match="implications"):
        self_edit_prompt("T", "C", "summary", "chat")
