"""Bounded, batched self-edit sampling: one call for all k in round 1, later rounds ask only for what is missing,
never more than max_attempts draws, exactly k slots per group, deterministic seeds."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from seal.arc.prompt import self_edit_messages
from seal.arc.schema import ArcSelfEdit, parse_self_edit
from seal.domain import Rejected
from seal.selfedit import SampleResult, SampleSettings, round_seed, sample_self_edits
from tests.unit.arc.conftest import make_task
from ttt.generate.base import GenerationOutput, GenerationRequest

TASK = make_task(([[1, 2]], [[2, 1]]), ([[3, 0], [0, 3]], [[0, 3], [3, 0]]), ([[5, 6]], [[6, 5]]))
MESSAGES = self_edit_messages(TASK)


def edit_text(epochs: int = 2, lr: float = 1e-4) -> str:
    edit = ArcSelfEdit(True, False, True, False, "train_using_output_tokens", lr, epochs)
    return "Sure: " + json.dumps(edit.to_dict())


class ScriptedGenerator:
    """A stand-in for a model: returns the given texts in order and records every request. The tests check the
    bounded-attempt and batching logic of the sampler, not what a model writes, so scripted texts are enough."""

    def __init__(self, texts: Sequence[str] | None = None, *, garbage: str | None = None) -> None:
        self.texts = list(texts or [])
        self.garbage = garbage
        self.requests: list[GenerationRequest] = []

    def _next(self) -> str:
        if self.texts:
            return self.texts.pop(0)
        if self.garbage is not None:
            return self.garbage
        raise AssertionError("the sampler asked for more samples than the script holds")

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        self.requests.extend(requests)
        outputs = []
        for request in requests:
            texts = tuple(self._next() for _ in range(request.n))
            outputs.append(
                GenerationOutput(
                    texts=texts,
                    prompt_tokens=42,
                    completion_tokens=tuple(len(t) for t in texts),
                    finish_reasons=tuple("length" if t.endswith("…") else "stop" for t in texts),
                )
            )
        return outputs


def test_all_k_are_asked_for_in_one_call_when_they_all_parse():
    generator = ScriptedGenerator([edit_text(e) for e in (1, 2, 3)])
    result = sample_self_edits(generator, MESSAGES, parse_self_edit, SampleSettings(k=3), seed=7)
    assert len(generator.requests) == 1 == result.generate_calls == result.rounds
    (request,) = generator.requests
    assert (request.n, request.temperature, request.max_new_tokens, request.top_p) == (3, 0.8, 128, 1.0)
    assert request.messages == MESSAGES and request.seed == round_seed(7, 1)
    assert result.slots == (0, 1, 2)
    assert [a.edit["training"]["num_train_epochs"] for a in result.slot_attempts()] == [1, 2, 3]  # type: ignore[index]
    assert all(a.accepted and a.reason is None and a.code is None and a.prompt_tokens == 42 for a in result.attempts)


def test_later_rounds_ask_only_for_what_is_missing():
    script = [edit_text(1), "no idea", "{", edit_text(2), "nope", edit_text(3), edit_text(4)]
    generator = ScriptedGenerator(script)
    result = sample_self_edits(generator, MESSAGES, parse_self_edit, SampleSettings(k=4), seed=0)
    # round 1: 4 asked, 2 accepted; round 2: 2 asked, 1 accepted; round 3: 1 asked, accepted.
    assert [r.n for r in generator.requests] == [4, 2, 1]
    assert [r.seed for r in generator.requests] == [round_seed(0, i) for i in (1, 2, 3)]
    assert len(set(r.seed for r in generator.requests)) == 3
    assert [a.round for a in result.attempts] == [1, 1, 1, 1, 2, 2, 3]
    assert result.slots == (0, 3, 5, 6) and result.rounds == 3 == result.generate_calls
    assert [a.code for a in result.attempts if not a.accepted] == ["not_json", "not_json", "not_json"]


def test_garbage_is_bounded_by_max_attempts_and_still_fills_k_slots():
    generator = ScriptedGenerator(garbage="I like turtles")
    settings = SampleSettings(k=3, max_attempts=7)
    result = sample_self_edits(generator, MESSAGES, parse_self_edit, settings, seed=1)
    assert len(result.attempts) == 7 and sum(r.n for r in generator.requests) == 7
    assert [r.n for r in generator.requests] == [3, 3, 1]  # the last round is capped by the remaining budget
    assert result.slots == (0, 1, 2)  # rejected attempts in draw order: every group has k slots
    assert not result.accepted
    assert all(
        a.code == "not_json" and "no JSON object" in (a.reason or "") and a.edit is None for a in result.attempts
    )


def test_default_budget_is_three_k():
    generator = ScriptedGenerator(garbage="")
    result = sample_self_edits(generator, MESSAGES, parse_self_edit, SampleSettings(k=2), seed=1)
    assert len(result.attempts) == 6 and SampleSettings(k=2).attempt_budget == 6


def test_accepted_slots_come_first_then_rejected_ones_in_draw_order():
    generator = ScriptedGenerator(["x", edit_text(1), "y", "z", "w", "v"])
    result = sample_self_edits(generator, MESSAGES, parse_self_edit, SampleSettings(k=3, max_attempts=6), seed=0)
    assert len(result.accepted) == 1 and result.slots == (1, 0, 2)


def test_a_truncated_reply_says_so():
    generator = ScriptedGenerator([edit_text()[:40] + "…"])
    (attempt,) = sample_self_edits(
        generator, MESSAGES, parse_self_edit, SampleSettings(k=1, max_attempts=1), seed=0
    ).attempts
    assert attempt.finish_reason == "length" and "cut off at 128 new tokens" in (attempt.reason or "")


def test_dedupe_rejects_repeats_and_draws_replacements():
    script = [edit_text(2), edit_text(2), edit_text(2, lr=0.0001), edit_text(3)]
    generator = ScriptedGenerator(script)
    result = sample_self_edits(generator, MESSAGES, parse_self_edit, SampleSettings(k=2, dedupe=True), seed=0)
    assert [r.n for r in generator.requests] == [2, 1, 1]
    assert [a.code for a in result.attempts] == [None, "duplicate", "duplicate", None]
    assert result.attempts[1].reason == "the same edit as attempt 0" and result.attempts[1].edit is not None
    assert result.slots == (0, 3)
    kept = ScriptedGenerator([edit_text(2), edit_text(2)])
    without = sample_self_edits(kept, MESSAGES, parse_self_edit, SampleSettings(k=2), seed=0)
    assert without.slots == (0, 1) and len(kept.requests) == 1


def test_a_custom_key_and_to_dict():
    @dataclass(frozen=True)
    class Note:
        text: str

    generator = ScriptedGenerator(["a1", "a2", "b1"])
    result = sample_self_edits(
        generator,
        MESSAGES,
        lambda text: Note(text),
        SampleSettings(k=2, dedupe=True),
        seed=0,
        key=lambda note: note.text[0],
        to_dict=lambda note: {"note": note.text},
    )
    assert [a.code for a in result.attempts] == [None, "duplicate", None]
    assert result.attempts[2].edit == {"note": "b1"}


@pytest.mark.parametrize("bad", [None, "a string", 3, ("tuple",)])
def test_parse_must_return_an_edit_or_rejected(bad: Any):
    with pytest.raises(TypeError, match="parse returned"):
        sample_self_edits(ScriptedGenerator(["x"]), MESSAGES, lambda _: bad, SampleSettings(k=1), seed=0)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="max_attempts"):
        SampleSettings(k=4, max_attempts=3)
    with pytest.raises(ValueError, match="k must be"):
        SampleSettings(k=0)
    with pytest.raises(ValueError, match="temperature"):
        SampleSettings(k=2, temperature=0)


def test_seeds_are_deterministic_and_differ_by_group_and_round():
    assert round_seed(3, 1) == round_seed(3, 1)
    assert round_seed(3, 1) != round_seed(3, 2) != round_seed(4, 2)
    assert 0 <= round_seed(0, 1) < 2**63
    one = sample_self_edits(ScriptedGenerator(garbage="?"), MESSAGES, parse_self_edit, SampleSettings(k=2), seed=5)
    two = ScriptedGenerator(garbage="?")
    sample_self_edits(two, MESSAGES, parse_self_edit, SampleSettings(k=2), seed=5)
    assert [r.seed for r in two.requests] == [round_seed(5, r) for r in range(1, one.rounds + 1)]


def test_result_round_trips_through_json():
    generator = ScriptedGenerator([edit_text(1), "bad", edit_text(2)])
    result = sample_self_edits(generator, MESSAGES, parse_self_edit, SampleSettings(k=2), seed=0)
    assert SampleResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_rejected_values_are_plain_data():
    assert Rejected("why", "code") == Rejected("why", "code")


# ---- the real HF generator on the tiny random model


def test_hf_generator_samples_k_in_one_call_reproducibly(tiny: tuple[Any, Any]):
    from ttt.generate.hf import HFGenerator

    model, tokenizer = tiny
    settings = SampleSettings(k=3, max_attempts=3, max_new_tokens=8)

    class Counting(HFGenerator):
        calls = 0

        def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
            Counting.calls += 1
            return super().generate(requests)

    generator = Counting(model, tokenizer)
    first = sample_self_edits(generator, MESSAGES, parse_self_edit, settings, seed=11)
    again = sample_self_edits(generator, MESSAGES, parse_self_edit, settings, seed=11)
    other = sample_self_edits(generator, MESSAGES, parse_self_edit, settings, seed=12)
    assert Counting.calls == 3 and first.generate_calls == 1 and len(first.attempts) == 3
    assert [a.text for a in first.attempts] == [a.text for a in again.attempts]
    assert [a.text for a in first.attempts] != [a.text for a in other.attempts]
    assert len({a.text for a in first.attempts}) > 1  # three samples, not one sample three times
    assert all(1 <= a.completion_tokens <= 8 and a.prompt_tokens > 0 for a in first.attempts)
    assert all(not a.accepted and a.reason for a in first.attempts)  # a random model writes no self-edit: recorded
