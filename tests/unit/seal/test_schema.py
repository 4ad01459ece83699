"""The ARC self-edit parser: valid replies become an `ArcSelfEdit`, everything else a `Rejected` with a stable code
and a reason naming what was wrong; no input makes it raise."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seal.arc.prompt import SELF_EDIT_INSTRUCTION
from seal.arc.schema import ArcSelfEdit, ParseLimits, parse_self_edit
from seal.domain import Rejected

EDIT = ArcSelfEdit(
    basic=True, size=False, chain=True, repeat=False, strategy="train_using_output_tokens", learning_rate=1e-4, epochs=2
)


def edit_json(**changes: object) -> dict:
    """EDIT's JSON with `section.key=value` changes (value None deletes the key or section)."""
    data = EDIT.to_dict()
    for path, value in changes.items():
        *parents, last = path.split("__")
        target = data
        for parent in parents:
            target = target[parent]
        if value is None:
            del target[last]
        else:
            target[last] = value
    return data


def rejected(text: str) -> Rejected:
    result = parse_self_edit(text)
    assert isinstance(result, Rejected), result
    return result


# ---- valid replies


def test_the_seal_skeleton_from_the_prompt_filled_in_parses():
    skeleton = SELF_EDIT_INSTRUCTION[SELF_EDIT_INSTRUCTION.index("{") :]
    for value in ("true", "false", "true", "false", '"train_using_output_tokens"', "0.0001", "2"):
        skeleton = skeleton.replace("...", value, 1)
    assert parse_self_edit(skeleton) == EDIT


def test_to_dict_is_seals_layout_and_round_trips():
    assert EDIT.to_dict() == {
        "data_generation": {
            "use_basic_augmentations": True,
            "use_size_augmentations": False,
            "use_chain_augmentations": True,
            "use_repeat_augmentations": False,
        },
        "training": {"strategy": "train_using_output_tokens", "learning_rate": 1e-4, "num_train_epochs": 2},
    }
    assert parse_self_edit(json.dumps(EDIT.to_dict())) == EDIT
    assert ArcSelfEdit.from_dict(EDIT.to_dict()) == EDIT


@pytest.mark.parametrize(
    "template",
    [
        "Here is the configuration:\n```json\n{}\n```\nGood luck!",
        "```\n{}\n```",
        "Sure {{not json}} -- my answer: {} and that's it.",
        '{{"note": "an unrelated object first"}} then {}',
    ],
)
def test_json_in_chatter_or_a_fence_is_found(template: str):
    assert parse_self_edit(template.format(json.dumps(EDIT.to_dict(), indent=2))) == EDIT


def test_extra_keys_are_ignored_and_integral_floats_are_epoch_counts():
    data = edit_json(training__num_train_epochs=3.0, training__warmup=5, comment="hi", data_generation__x=1)
    assert parse_self_edit(json.dumps(data)) == ArcSelfEdit(**{**EDIT.__dict__, "epochs": 3})


def test_key_is_canonical_and_tells_recipes_apart():
    same = parse_self_edit(json.dumps(edit_json(training__learning_rate=0.0001)))
    assert isinstance(same, ArcSelfEdit) and same.key() == EDIT.key()
    assert ArcSelfEdit(**{**EDIT.__dict__, "repeat": True}).key() != EDIT.key()
    assert ArcSelfEdit(**{**EDIT.__dict__, "learning_rate": 2e-4}).key() != EDIT.key()


# ---- rejections, one per code


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "no JSON object"),
        ("I would use basic augmentations and 2 epochs.", "no JSON object"),
        (json.dumps(EDIT.to_dict())[:-30], "invalid JSON"),  # cut off at the token limit
        (json.dumps(EDIT.to_dict()).replace("true", "True"), "lowercase true/false"),
        (json.dumps(EDIT.to_dict()).replace('"', "'"), "double quotes"),
        ("[1, 2, 3]", "no JSON object"),
    ],
)
def test_not_json(text: str, says: str):
    result = rejected(text)
    assert result.code == "not_json" and says in result.reason


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"training": None}, "'training'"),
        ({"data_generation": None}, "'data_generation'"),
        ({"training__learning_rate": None}, "'learning_rate'"),
        ({"data_generation__use_chain_augmentations": None}, "'use_chain_augmentations'"),
    ],
)
def test_missing_section_or_key_is_named(changes: dict, says: str):
    result = rejected(json.dumps(edit_json(**changes)))
    assert result.code == "missing_section" and says in result.reason


def test_a_flat_object_without_sections_is_a_missing_section():
    flat = {**EDIT.to_dict()["data_generation"], **EDIT.to_dict()["training"]}
    assert rejected(json.dumps(flat)).code == "missing_section"


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"data_generation__use_basic_augmentations": "yes"}, "use_basic_augmentations must be true or false"),
        ({"data_generation__use_size_augmentations": 1}, "use_size_augmentations"),
        ({"training__num_train_epochs": 2.5}, "num_train_epochs must be an integer, got 2.5"),
        ({"training__num_train_epochs": "2"}, "num_train_epochs"),
        ({"training__learning_rate": "1e-4"}, "learning_rate must be a finite number"),
        ({"training__learning_rate": True}, "learning_rate"),
        ({"training__strategy": 3}, "strategy must be a string"),
        ({"training": [1, 2]}, "section 'training' must be a JSON object"),
    ],
)
def test_bad_type(changes: dict, says: str):
    result = rejected(json.dumps(edit_json(**changes)))
    assert result.code == "bad_type" and says in result.reason


def test_non_finite_learning_rate_is_a_bad_type():
    assert rejected(json.dumps(edit_json(training__learning_rate=float("nan")))).code == "bad_type"


def test_unknown_strategy_names_the_value():
    result = rejected(json.dumps(edit_json(training__strategy="train_using_vibes")))
    assert result.code == "unknown_strategy" and "'train_using_vibes'" in result.reason


@pytest.mark.parametrize(("lr", "ok"), [(1e-6, True), (1e-2, True), (5e-7, False), (0.1, False), (0, False)])
def test_learning_rate_range(lr: float, ok: bool):
    result = parse_self_edit(json.dumps(edit_json(training__learning_rate=lr)))
    if ok:
        assert isinstance(result, ArcSelfEdit) and result.learning_rate == lr
    else:
        assert isinstance(result, Rejected) and result.code == "lr_out_of_range"
        assert "[1e-06, 0.01]" in result.reason


@pytest.mark.parametrize(("epochs", "ok"), [(1, True), (20, True), (0, False), (21, False), (-1, False)])
def test_epochs_range(epochs: int, ok: bool):
    result = parse_self_edit(json.dumps(edit_json(training__num_train_epochs=epochs)))
    if ok:
        assert isinstance(result, ArcSelfEdit) and result.epochs == epochs
    else:
        assert isinstance(result, Rejected) and result.code == "epochs_out_of_range" and "[1, 20]" in result.reason


def test_limits_are_configurable():
    text = json.dumps(edit_json(training__num_train_epochs=0, training__learning_rate=0.5))
    assert parse_self_edit(text, ParseLimits(lr_max=1.0, epochs_min=0)) == ArcSelfEdit(
        **{**EDIT.__dict__, "learning_rate": 0.5, "epochs": 0}
    )


def test_from_dict_raises_with_the_reason_and_the_dataclass_checks_its_values():
    with pytest.raises(ValueError, match="missing_section"):
        ArcSelfEdit.from_dict({"training": {}})
    with pytest.raises(ValueError, match="strategy"):
        ArcSelfEdit(**{**EDIT.__dict__, "strategy": "other"})


# ---- never raises

KEYS = [*EDIT.to_dict()["data_generation"], *EDIT.to_dict()["training"]]
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_never_raises(text: str):
    assert isinstance(parse_self_edit(text), (ArcSelfEdit, Rejected))


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["data_generation", "training", "x"]),
        st.dictionaries(
            st.sampled_from(KEYS),
            _json_values,
        )
        | _json_values,
    ),
    st.text(max_size=20),
    st.text(max_size=20),
)
def test_near_miss_self_edits_never_raise(data: dict, before: str, after: str):
    text = before + json.dumps(data) + after
    assert isinstance(parse_self_edit(text), (ArcSelfEdit, Rejected))


def test_deeply_nested_input_does_not_raise():
    assert rejected("{" * 5000 + "}" * 5000).code == "not_json"
    assert isinstance(parse_self_edit('{"a":' * 3000 + "1" + "}" * 3000), Rejected)
