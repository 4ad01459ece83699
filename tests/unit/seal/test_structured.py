"""Template decoding: the model chooses every value, the template writes the syntax, the parser still judges."""

from __future__ import annotations

import pytest

from seal.arc.prompt import EPOCHS, LEARNING_RATES, SELF_EDIT_TEMPLATE
from seal.arc.schema import ArcSelfEdit, parse_self_edit
from seal.structured import Hole, TemplateGenerator, resolve_choice
from ttt.generate import GenerationRequest
from ttt.generate.hf import HFGenerator

MESSAGES = [{"role": "user", "content": "Configure the training."}]


def test_the_arc_template_filled_by_the_tiny_model_always_parses_into_a_self_edit(tiny: tuple) -> None:
    model, tokenizer = tiny
    calls: list[int] = []
    inner = HFGenerator(model, tokenizer)
    real = inner.generate

    def counting(requests):  # type: ignore[no-untyped-def]  # a spy around the real generator, not a stand-in
        calls.append(len(requests))
        return real(requests)

    inner.generate = counting  # type: ignore[method-assign]
    generator = TemplateGenerator(inner, SELF_EDIT_TEMPLATE)
    (output,) = generator.generate([GenerationRequest(MESSAGES, temperature=1.0, n=6, seed=3, max_new_tokens=128)])
    holes = sum(isinstance(part, Hole) for part in SELF_EDIT_TEMPLATE)
    assert calls == [6] * holes  # one batched call per hole, all samples together
    edits = [parse_self_edit(text) for text in output.texts]
    assert all(isinstance(edit, ArcSelfEdit) for edit in edits), edits
    assert {f"{e.learning_rate:g}" for e in edits} <= {f"{float(x):g}" for x in LEARNING_RATES}
    assert {str(e.epochs) for e in edits} <= set(EPOCHS)
    assert len({e.key() for e in edits}) > 1  # the values are sampled
    again = generator.generate([GenerationRequest(MESSAGES, temperature=1.0, n=6, seed=3, max_new_tokens=128)])
    assert again[0].texts == output.texts
    assert output.completion_tokens[0] >= holes


def test_field_holes_stop_at_the_terminator_and_holes_are_checked(tiny: tuple) -> None:
    model, tokenizer = tiny
    template = ['{"n": ', Hole("n", chars="0123456789", max_tokens=4), "}"]
    (output,) = TemplateGenerator(HFGenerator(model, tokenizer), template).generate(
        [GenerationRequest(MESSAGES, temperature=1.0, n=3, seed=1)]
    )
    for text in output.texts:
        assert text.startswith('{"n": ') and text.endswith("}")
        assert set(text[len('{"n": ') : -1]) <= set("0123456789")
    with pytest.raises(ValueError, match="either options or chars"):
        Hole("x")
    with pytest.raises(ValueError, match="followed by literal text"):
        TemplateGenerator(HFGenerator(model, tokenizer), ["a", Hole("n", chars="01")])


def test_resolve_choice() -> None:
    assert resolve_choice("fal", ("true", "false")) == "false"
    assert resolve_choice("true", ("true", "false")) == "true"
    assert resolve_choice("yes", ("true", "false")) == "yes"  # left for the parser to reject, with its reason
