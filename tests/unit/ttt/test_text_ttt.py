"""Plain-text encoding, text prompts with stop strings, and the passage inner loop, on the tiny model."""

from __future__ import annotations

from typing import Any

import pytest

from ttt.examples import IGNORE_INDEX, encode_completion, encode_text, end_of_turn_ids
from ttt.generate.base import GenerationRequest
from ttt.generate.hf import HFGenerator
from ttt.lora import AdapterSlot, LoraSettings
from ttt.settings import TrainSettings
from ttt.text_ttt import PassageRecipe, QAItem, gold_example, passage_baseline, run_passage

PASSAGE = "Zorbia\nZorbia was founded by Mira Quell in 1871."
QUESTIONS = (
    QAItem(prompt="Topic: Zorbia\nWho founded Zorbia? Answer:", gold=("Mira Quell",)),
    QAItem(prompt=({"role": "user", "content": "Who founded Zorbia?"},), gold=("Mira Quell",)),
)


def _recipe(**train: Any) -> PassageRecipe:
    settings = {"lr": 5e-3, "epochs": 4, "batch_size": 1, "warmup_steps": 0, "lr_schedule": "linear"}
    settings.update(train)
    return PassageRecipe(train=TrainSettings(max_steps_cap=None, **settings), max_new_tokens=6)


def test_encode_text_masks_full_text_a_char_offset_and_a_substring(tiny_tokenizer: Any) -> None:
    full = encode_text(tiny_tokenizer, PASSAGE)
    assert full.input_ids[0] == tiny_tokenizer.bos_token_id and full.input_ids.count(tiny_tokenizer.bos_token_id) == 1
    assert list(full.labels) == list(full.input_ids)
    after = encode_text(tiny_tokenizer, PASSAGE, loss_start="Zorbia\n")
    masked = [i for i, label in enumerate(after.labels) if label == IGNORE_INDEX]
    assert masked == list(range(len(masked))) and 0 < len(masked) < len(after.labels)
    assert tiny_tokenizer.decode(
        [t for t, lab in zip(after.input_ids, after.labels) if lab != IGNORE_INDEX]
    ).startswith("Zorbia was")
    assert encode_text(tiny_tokenizer, PASSAGE, loss_start=len("Zorbia\n")).labels == after.labels
    with pytest.raises(ValueError, match="does not contain"):
        encode_text(tiny_tokenizer, PASSAGE, loss_start="Atlantis")


def test_encode_completion_puts_the_loss_on_the_completion_and_an_eos(tiny_tokenizer: Any) -> None:
    example = encode_completion(tiny_tokenizer, "Who founded Zorbia? Answer:", " Mira Quell")
    kept = [t for t, label in zip(example.input_ids, example.labels) if label != IGNORE_INDEX]
    assert kept[-1] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode(kept[:-1]).strip() == "Mira Quell"


def test_gold_examples_score_only_the_answer(tiny_tokenizer: Any) -> None:
    for question in QUESTIONS:
        example = gold_example(tiny_tokenizer, question)
        kept = [t for t, label in zip(example.input_ids, example.labels) if label != IGNORE_INDEX]
        assert tiny_tokenizer.decode(kept).strip() == "Mira Quell"


def test_without_a_chat_template_the_end_of_a_text_is_eos(tiny_tokenizer: Any) -> None:
    template = tiny_tokenizer.chat_template
    try:
        tiny_tokenizer.chat_template = None
        assert end_of_turn_ids(tiny_tokenizer) == frozenset({tiny_tokenizer.eos_token_id})
    finally:
        tiny_tokenizer.chat_template = template


def test_text_prompts_generate_deterministically_and_stop_strings_cut(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    generator = HFGenerator(model, tokenizer)
    plain = GenerationRequest(text="Zorbia was founded by", max_new_tokens=12)
    first, again = generator.generate([plain, plain])
    assert first.texts == again.texts and first.completion_tokens[0] == 12
    text = first.text
    stop = next((c for c in text[2:] if c.strip()), None)
    if stop is None:
        pytest.skip("the random model wrote only whitespace")
    cut = generator.generate([GenerationRequest(text="Zorbia was founded by", max_new_tokens=12, stop=(stop,))])[0]
    assert stop not in cut.text and text.startswith(cut.text) and cut.finish_reasons == ("stop",)
    with pytest.raises(ValueError, match="not both"):
        GenerationRequest([{"role": "user", "content": "x"}], text="y")
    with pytest.raises(ValueError, match="messages is empty"):
        GenerationRequest()


def test_run_passage_resets_learns_the_passage_and_leaves_the_baseline_alone(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    slot = AdapterSlot(model, LoraSettings(rank=8, alpha=16, targets=("q_proj", "v_proj")))
    generator = HFGenerator(slot, tokenizer)
    recipe = _recipe()
    before = passage_baseline(slot, tokenizer, generator, QUESTIONS, recipe)
    sequences = [PASSAGE, "Zorbia\nWho founded Zorbia? Answer: Mira Quell"]
    first = run_passage(slot, tokenizer, generator, sequences, QUESTIONS, recipe, seed=3)
    second = run_passage(slot, tokenizer, generator, sequences, QUESTIONS, recipe, seed=3)
    assert (first.answers, first.nll) == (second.answers, second.nll)  # the adapter was reset in place
    assert first.train["steps"] == 4 * 2 and first.data_stats["sequences"] == 2
    assert all(after < base for after, base in zip(first.nll, before.nll))  # the gold became likelier
    assert passage_baseline(slot, tokenizer, generator, QUESTIONS, recipe).nll == before.nll
    skipped = run_passage(
        slot, tokenizer, generator, sequences, QUESTIONS, PassageRecipe(train=recipe.train, skip_training=True), 3
    )
    assert skipped.train["steps"] == 0 and skipped.nll == pytest.approx(before.nll)
