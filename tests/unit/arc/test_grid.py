"""Grid validation, rendering and parsing of model output."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.arc.conftest import grids
from ttt.arc import Grid, GridError, grid_to_text, parse_grid


def test_grid_round_trips_lists_and_is_a_hashable_value():
    g = Grid([[1, 2, 3], [4, 5, 6]])
    assert g.to_list() == [[1, 2, 3], [4, 5, 6]]
    assert g.shape == (2, 3)
    assert g == Grid(((1, 2, 3), (4, 5, 6)))
    assert len({g, Grid([[1, 2, 3], [4, 5, 6]]), Grid([[1]])}) == 2
    with pytest.raises(AttributeError):
        g.foo = 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([[1, 2], [3]], "row 1 has 1 cells but row 0 has 2"),
        ([[1, 10]], "cell (0, 1) is 10"),
        ([[1, -1]], "cell (0, 1) is -1"),
        ([[True]], "cell (0, 0) is True"),
        ([[1.5]], "cell (0, 0) is 1.5"),
        ([], "needs 1 to 30 rows, got 0"),
        ([[]], "row 0 has 0"),
        ([[0] * 31], "row 0 has 31"),
        ([[0]] * 31, "got 31"),
        ("[[1]]", "must be a list of rows"),
        ([5], "row 0 must be a list"),
    ],
)
def test_invalid_grids_name_the_task_the_example_and_the_problem(data, message):
    with pytest.raises(GridError) as info:
        Grid(data, task_id="abc123", where="train[2].output")
    text = str(info.value)
    assert text.startswith("task abc123, train[2].output: ")
    assert message in text


@settings(max_examples=60, deadline=None)
@given(grids())
def test_every_format_parses_back_to_the_same_grid(grid):
    for fmt in ("nested", "numpy", "digits"):
        parsed = parse_grid(grid_to_text(grid, fmt) + "#", fmt)
        assert parsed.ok, (fmt, parsed.error)
        assert parsed.grid == grid


def test_formats_look_as_documented():
    g = Grid([[0, 1], [2, 3]])
    assert grid_to_text(g, "nested") == "[[0, 1], [2, 3]]"
    assert grid_to_text(g, "numpy") == "[[0 1]\n [2 3]]"
    assert grid_to_text(g, "digits") == "01\n23"


def test_parsing_ignores_what_follows_the_answer_end_and_accepts_either_bracket_style():
    assert parse_grid("  [[1, 2], [3, 4]]#junk [[9]]", "nested").grid == Grid([[1, 2], [3, 4]])
    assert parse_grid("[[1 2]\n [3 4]]#", "nested").grid == Grid([[1, 2], [3, 4]])
    assert parse_grid("12\n34\n\nexplanation", "digits").grid == Grid([[1, 2], [3, 4]])


@pytest.mark.parametrize(
    ("text", "fmt", "reason"),
    [
        ("", "nested", "empty output"),
        ("   #[[1]]", "nested", "empty output"),
        ("I think the answer is 3", "nested", "no '[[' found"),
        ("[[1, 2], [3, 4]", "nested", "no closing ']]'"),
        ("[[1, 2], [3]]", "nested", "row 1 has 1 cells but row 0 has 2"),
        ("[[1, 12]]", "nested", "cell '12'"),
        ("[[1, a]]", "nested", "cell 'a'"),
        ("[[1, \u00b2]]", "nested", "cell '\u00b2'"),  # a digit to str.isdigit(), not a colour
        ("[[\u0661, 1]]", "nested", "cell '\u0661'"),  # Arabic-Indic one
        ("1\u00b2\n34", "digits", "line 0 is not a row of digits"),
        ("[[[1]]]", "nested", "unexpected text between rows"),
        ("[[]]", "nested", "row 0 is empty"),
        ("[" + ", ".join(["[1]"] * 31) + "]", "nested", "got 31"),
        ("hello\n12", "digits", "line 0 is not a row of digits"),
        ("12\n3", "digits", "row 1 has 1 cells"),
        ("[[1]]", "base64", "unknown grid format"),
    ],
)
def test_unparseable_text_is_recorded_with_its_reason_never_raised(text, fmt, reason):
    parsed = parse_grid(text, fmt)
    assert not parsed.ok
    assert parsed.grid is None
    assert parsed.text == text
    assert reason in parsed.error


_CELLS = st.sampled_from(["0", "7", "9", "12", "\u00b2", "\u0661", "\u2460", "a", "", "-1", " "])
_ROWS = st.lists(st.lists(_CELLS, min_size=1, max_size=4), min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(_ROWS, st.sampled_from(["nested", "numpy", "digits"]), st.text(alphabet="[], \n#1", max_size=8))
def test_no_model_output_makes_the_parser_raise(rows, fmt, noise):
    nested = "[" + ", ".join("[" + ", ".join(row) + "]" for row in rows) + "]"
    digit_rows = "\n".join("".join(row) for row in rows)
    for text in (nested + noise, noise + nested, digit_rows + noise):
        parsed = parse_grid(text, fmt)
        assert parsed.ok == (parsed.grid is not None) and (parsed.ok or parsed.error)
        if parsed.ok:
            assert all(0 <= v <= 9 for row in parsed.grid.to_list() for v in row)


def test_non_text_output_is_a_failure_not_a_crash():
    parsed = parse_grid(None, "nested")  # type: ignore[arg-type]
    assert not parsed.ok and "not text" in parsed.error
