"""The hf generation backend: batching is invisible, sampling is seeded per request, adapters are honoured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ttt.examples import encode_messages, end_of_turn_ids
from ttt.generate import ACTIVE_ADAPTER, GenerationRequest, Generator, make_generator
from ttt.generate.hf import HFGenerator
from ttt.lora import AdapterSlot, LoraSettings
from ttt.train import TrainSettings, train

PROMPTS = ["[[1, 2]] -> ", "[[3, 4], [5, 6], [7, 8]] -> [[0]]#\n[[9]] -> ", "What is the capital?", "[[0]] -> "]


def _request(content: str, **kwargs: Any) -> GenerationRequest:
    return GenerationRequest([{"role": "user", "content": content}], **{"max_new_tokens": 12, **kwargs})


def test_batched_greedy_equals_one_at_a_time(tiny: tuple) -> None:
    model, tokenizer = tiny
    requests = [_request(prompt) for prompt in PROMPTS]
    batched = HFGenerator(model, tokenizer, max_batch_size=8).generate(requests)
    single = HFGenerator(model, tokenizer, max_batch_size=1)
    for request, output in zip(requests, batched):
        (alone,) = single.generate([request])
        assert alone == output
    assert len({output.text for output in batched}) > 1  # different prompts, different answers: order is kept
    assert isinstance(single, Generator)


def test_sampling_is_seeded_per_request(tiny: tuple) -> None:
    model, tokenizer = tiny
    generator = HFGenerator(model, tokenizer)
    sample = _request(PROMPTS[0], temperature=1.0, n=3, seed=7, return_logprobs=True)
    alone = generator.generate([sample])[0]
    mixed = generator.generate([_request(PROMPTS[1]), sample, _request(PROMPTS[2], temperature=0.7, seed=1)])[1]
    # The same samples whatever shares the batch (log-probabilities may differ in the last float bits).
    assert (alone.texts, alone.completion_tokens) == (mixed.texts, mixed.completion_tokens)
    assert mixed.logprobs is not None and alone.logprobs is not None
    for first, second in zip(alone.logprobs, mixed.logprobs):
        assert first == pytest.approx(second, abs=1e-4)
    assert len(set(alone.texts)) > 1  # n samples differ from each other
    assert generator.generate([_request(PROMPTS[0], temperature=1.0, n=3, seed=8)])[0].texts != alone.texts
    assert alone.logprobs is not None
    for logprobs, count in zip(alone.logprobs, alone.completion_tokens):
        assert len(logprobs) == count and all(value <= 0 for value in logprobs)


def test_rows_sharing_a_prompt_share_one_prefill_and_sample_as_if_alone(tiny: tuple) -> None:
    model, tokenizer = tiny
    requests = [
        _request(PROMPTS[1], temperature=1.0, n=3, seed=5, return_logprobs=True),
        _request(PROMPTS[0], temperature=0.8, n=2, seed=6, return_logprobs=True),
        _request(PROMPTS[1]),  # greedy, same prompt as the first request: shares its prefill too
    ]
    shared = HFGenerator(model, tokenizer, max_batch_size=8)
    forwards: list[tuple[int, ...]] = []
    original = shared._forward

    def counting_forward(**kwargs: Any) -> Any:
        forwards.append(tuple(kwargs["input_ids"].shape))
        return original(**kwargs)

    shared._forward = counting_forward  # type: ignore[method-assign]
    batched = shared.generate(requests)
    assert forwards[0][0] == 2  # 6 rows, 2 distinct prompts: 2 rows prefilled
    single = HFGenerator(model, tokenizer, max_batch_size=1)  # one row per batch: nothing shared
    for request, output in zip(requests, batched):
        (alone,) = single.generate([request])
        assert (alone.texts, alone.completion_tokens, alone.finish_reasons) == (
            output.texts,
            output.completion_tokens,
            output.finish_reasons,
        )
        for first, second in zip(alone.logprobs or (), output.logprobs or ()):
            assert first == pytest.approx(second, abs=1e-4)


def test_top_p_keeps_only_the_likeliest_tokens(tiny: tuple) -> None:
    model, tokenizer = tiny
    generator = HFGenerator(model, tokenizer)
    nucleus = generator.generate([_request(PROMPTS[0], temperature=1.0, top_p=1e-6, n=2, seed=3)])[0]
    greedy = generator.generate([_request(PROMPTS[0])])[0]
    assert nucleus.texts == (greedy.text, greedy.text)  # a tiny nucleus holds only the top token


def test_length_limit_and_token_counts(tiny: tuple) -> None:
    model, tokenizer = tiny
    (output,) = HFGenerator(model, tokenizer).generate([_request(PROMPTS[0], max_new_tokens=5)])
    assert output.finish_reasons == ("length",) and output.completion_tokens == (5,)
    chat = [{"role": "user", "content": PROMPTS[0]}]
    assert output.prompt_tokens == len(tokenizer.apply_chat_template(chat, add_generation_prompt=True)["input_ids"])
    assert output.logprobs is None


def test_adapters_end_of_turn_and_stop(tiny: tuple, tmp_path: Path) -> None:
    """Train the tiny model to answer one thing, then generate with the active, saved and no adapter."""
    model, tokenizer = tiny
    slot = AdapterSlot(model, LoraSettings(rank=8, alpha=16))
    messages = [{"role": "user", "content": "[[1, 2]] -> "}, {"role": "assistant", "content": "[[2, 1]]#"}]
    example = encode_messages(tokenizer, messages)
    train(slot, [example] * 8, TrainSettings(lr=3e-2, epochs=5, batch_size=2, warmup_steps=0))
    generator = HFGenerator(slot, tokenizer)
    ask = GenerationRequest(messages[:1], adapter=ACTIVE_ADAPTER, max_new_tokens=20)
    (active,) = generator.generate([ask])
    assert active.text == "[[2, 1]]#"
    assert active.finish_reasons == ("stop",)  # it emitted the end-of-turn token and stopped there
    assert active.completion_tokens == (example.num_loss_tokens,)  # the answer's tokens plus the end-of-turn token
    saved = slot.save(tmp_path / "adapter")
    slot.reset()
    base, from_disk = generator.generate(
        [
            GenerationRequest(messages[:1], max_new_tokens=20),
            GenerationRequest(messages[:1], adapter=str(saved), max_new_tokens=20),
        ]
    )
    assert from_disk.text == "[[2, 1]]#"
    assert base.text != "[[2, 1]]#"  # the base model never learned it
    assert slot.source == str(saved)


def test_base_model_first_then_adapters_in_one_call(tiny: tuple, tmp_path: Path) -> None:
    model, tokenizer = tiny
    slot = AdapterSlot(model, LoraSettings(rank=4, alpha=8))
    generator = HFGenerator(slot, tokenizer)
    base_alone = generator.generate([_request(PROMPTS[0])])[0]
    answer = [{"role": "user", "content": PROMPTS[0]}, {"role": "assistant", "content": "[[7]]#"}]
    train(slot, [encode_messages(tokenizer, answer)] * 4, TrainSettings(lr=3e-2, epochs=4, warmup_steps=0))
    active_alone = generator.generate([_request(PROMPTS[0], adapter=ACTIVE_ADAPTER)])[0]
    assert active_alone.text != base_alone.text
    saved = slot.save(tmp_path / "a")
    slot.reset(5)
    slot.save(tmp_path / "b")  # another adapter
    slot.load(saved)
    # The ACTIVE request is listed after a saved adapter that would overwrite the slot: it must still see `a`.
    outputs = generator.generate(
        [
            _request(PROMPTS[0], adapter=str(tmp_path / "b")),
            _request(PROMPTS[0], adapter=ACTIVE_ADAPTER),
            _request(PROMPTS[0]),
        ]
    )
    assert outputs[1] == active_alone
    assert outputs[2] == base_alone


def test_adapter_without_slot_is_an_error(tiny: tuple) -> None:
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="no AdapterSlot"):
        HFGenerator(model, tokenizer).generate([_request(PROMPTS[0], adapter=ACTIVE_ADAPTER)])


def test_stop_ids_and_requests_validation(tiny: tuple) -> None:
    model, tokenizer = tiny
    generator = make_generator("hf", model, tokenizer)
    assert end_of_turn_ids(tokenizer) <= generator.stop_ids
    with pytest.raises(ValueError, match="backend"):
        make_generator("llama.cpp")
    with pytest.raises(ValueError, match="identical"):
        _request("x", n=2)
    with pytest.raises(ValueError, match="top_p"):
        _request("x", temperature=1.0, top_p=0.0)


def test_constrained_decoding_emits_only_the_allowed_characters(tiny: tuple) -> None:
    model, tokenizer = tiny
    generator = HFGenerator(model, tokenizer)
    alphabet = "0123456789[], #"
    free, *constrained = generator.generate(
        [
            _request(PROMPTS[2], max_new_tokens=16),
            *(_request(p, allowed_chars=alphabet, max_new_tokens=16) for p in PROMPTS),
        ]
    )
    assert any(c not in alphabet for c in free.text)  # the random model writes other characters when it may
    for output in constrained:
        assert output.text and all(c in alphabet for c in output.text), output.text
    sampled = generator.generate([_request(PROMPTS[0], allowed_chars="01", temperature=1.0, n=2, seed=1)])[0]
    assert all(set(text) <= {"0", "1"} for text in sampled.texts)
    with pytest.raises(ValueError, match="allowed_chars is empty"):
        _request(PROMPTS[0], allowed_chars="")


def test_choices_make_the_reply_exactly_one_option_sampled_by_the_model(tiny: tuple) -> None:
    model, tokenizer = tiny
    generator = HFGenerator(model, tokenizer)
    options = ("true", "false", "1e-4", "10", "1")
    outputs = generator.generate(
        [_request(PROMPTS[i % 4], choices=options, temperature=1.0, n=4, seed=i) for i in range(4)]
        + [_request(PROMPTS[0], choices=options)]
    )
    texts = [text for output in outputs for text in output.texts]
    assert all(text in options for text in texts), texts
    assert len(set(texts)) > 1  # sampled, not fixed
    with pytest.raises(ValueError, match="choices"):
        _request(PROMPTS[0], choices=("a", ""))


def test_prefill_continues_the_reply_and_is_not_returned(tiny: tuple) -> None:
    """Greedy decoding after a prefilled reply start equals a plain argmax loop over prompt + prefill."""
    import torch

    from ttt.examples import encode_prompt

    model, tokenizer = tiny
    request = _request(PROMPTS[1], prefill="[[1, 2]", max_new_tokens=6)
    output = HFGenerator(model, tokenizer).generate([request])[0]
    ids = encode_prompt(tokenizer, request.messages, request.prefill)
    assert output.prompt_tokens == len(ids) > len(encode_prompt(tokenizer, request.messages))
    generated: list[int] = []
    with torch.no_grad():
        for _ in range(6):
            logits = model(torch.tensor([ids + generated])).logits[0, -1]
            generated.append(int(logits.argmax()))
            if generated[-1] in end_of_turn_ids(tokenizer):
                generated.pop()
                break
    assert output.text == tokenizer.decode(generated, skip_special_tokens=True)


def test_after_an_out_of_memory_error_fewer_rows_decode_at_once(tiny: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    from ttt import memory

    model, tokenizer = tiny
    generator = HFGenerator(model, tokenizer, max_batch_size=4)
    sizes: list[int] = []
    real = generator._decode
    monkeypatch.setattr(generator, "_decode", lambda rows: sizes.append(len(rows)) or real(rows))
    requests = [_request(f"Say {word}.", max_new_tokens=3) for word in ("one", "two", "three", "four")]
    memory.reset_backoff()
    full = generator.generate(requests)
    memory.backoff().batch_divisor = 2
    try:
        halved = generator.generate(requests)
    finally:
        memory.reset_backoff()
    assert sizes == [4, 2, 2]
    assert [o.texts for o in halved] == [o.texts for o in full]  # greedy: the same answers, decoded in halves


def test_split_batch_keeps_the_effective_batch() -> None:
    from ttt import memory

    memory.reset_backoff()
    assert memory.split_batch(10) == (10, 1)
    for divisor, expected in ((2, (5, 2)), (4, (2, 5)), (8, (1, 10))):
        memory.backoff().batch_divisor = divisor
        assert memory.split_batch(10) == expected
    memory.backoff().batch_divisor = 2
    assert memory.split_batch(5) == (1, 5)  # 5 has no divisor near 2: one row, five accumulation steps
    memory.reset_backoff()
