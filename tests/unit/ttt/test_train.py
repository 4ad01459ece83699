"""The training loop: padding-free packing is exact, steps and schedules follow the settings, runs are seeded."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
import torch

from ttt import cpu_features
from ttt.examples import IGNORE_INDEX, EncodedExample, encode_messages
from ttt.lora import AdapterSlot, LoraSettings
from ttt.train import (
    PackedBatch,
    TrainSettings,
    lr_factor,
    mean_loss,
    pack_examples,
    packed_loss_sum,
    resolve_precision,
    seal_epochs,
    train,
)

SMALL = LoraSettings(rank=4, alpha=8)


def _examples(tokenizer: Any, count: int = 6, loss: str = "output_tokens") -> list[EncodedExample]:
    return [
        encode_messages(
            tokenizer,
            [
                {"role": "system", "content": "Figure out the transformation."},
                {"role": "user", "content": f"[[{i % 10}, {(i * 3) % 10}]] -> " * (1 + i % 3)},
                {"role": "assistant", "content": f"[[{(i * 7) % 10}]]#" * (1 + i % 2)},
            ],
            loss=loss,  # type: ignore[arg-type]
        )
        for i in range(count)
    ]


def _per_sequence_mean_loss(model: Any, examples: list[EncodedExample]) -> float:
    """HF's own loss, one unpadded sequence at a time, weighted by loss tokens."""
    total, count = 0.0, 0
    with torch.no_grad():
        for example in examples:
            out = model(input_ids=torch.tensor([example.input_ids]), labels=torch.tensor([example.labels]))
            total += float(out.loss) * example.num_loss_tokens
            count += example.num_loss_tokens
    return total / count


@pytest.mark.parametrize("loss", ["output_tokens", "all_tokens"])
def test_packed_loss_equals_per_sequence_loss(tiny: tuple, loss: str) -> None:
    model, tokenizer = tiny
    examples = _examples(tokenizer, 5, loss)
    batch = pack_examples(examples)
    assert batch.num_tokens == sum(example.num_tokens for example in examples)  # not one padding token
    with torch.no_grad():
        packed = float(packed_loss_sum(model, batch)) / batch.num_loss_tokens
    assert packed == pytest.approx(_per_sequence_mean_loss(model, examples), rel=1e-5)


def test_packing_without_position_restart_would_leak(tiny: tuple) -> None:
    """The per-sequence position ids are what keeps packed sequences apart: without them the loss changes."""
    model, tokenizer = tiny
    examples = _examples(tokenizer, 4, "all_tokens")
    batch = pack_examples(examples)
    leaky = PackedBatch(
        batch.input_ids, torch.arange(batch.num_tokens)[None, :], batch.keep, batch.targets
    )  # one long sequence
    with torch.no_grad():
        exact, leaked = float(packed_loss_sum(model, batch)), float(packed_loss_sum(model, leaky))
    assert abs(exact - leaked) > 1e-3


def test_pack_targets_never_cross_example_boundaries(tiny_tokenizer: Any) -> None:
    examples = _examples(tiny_tokenizer, 3, "all_tokens")
    batch = pack_examples(examples)
    starts = [0]
    for example in examples[:-1]:
        starts.append(starts[-1] + example.num_tokens)
    last_positions = {start - 1 for start in starts[1:]} | {batch.num_tokens - 1}
    assert not last_positions & set(batch.keep.tolist())  # the last token of an example predicts nothing
    assert batch.position_ids[0, starts].tolist() == [0, 0, 0]


def test_training_reduces_the_loss(tiny: tuple) -> None:
    model, tokenizer = tiny
    slot = AdapterSlot(model, SMALL)
    examples = _examples(tokenizer)
    before = mean_loss(slot, examples)
    result = train(slot, examples, TrainSettings(lr=1e-2, epochs=8, batch_size=2, warmup_steps=2))
    assert mean_loss(slot, examples) < before - 0.5
    assert result.losses[-1] < result.losses[0]


def test_step_count_and_metrics(tiny: tuple) -> None:
    model, tokenizer = tiny
    slot = AdapterSlot(model, SMALL)
    examples = _examples(tokenizer, 7)
    result = train(slot, examples, TrainSettings(epochs=3, batch_size=2, grad_accum=2, warmup_steps=1))
    # 7 examples / batch 2 = 4 micro-batches = 2 optimizer steps per epoch.
    assert result.steps == 6 and len(result.losses) == 6 and len(result.learning_rates) == 6
    assert result.epochs_run == 3 and not result.capped
    assert result.tokens == 3 * sum(example.num_tokens for example in examples)
    assert result.loss_tokens == 3 * sum(example.num_loss_tokens for example in examples)
    assert result.peak_memory_bytes is not None and result.peak_memory_bytes > 10 * 2**20
    assert result.peak_memory_kind == "rss_peak"
    assert 0 < result.forward_backward_seconds < result.seconds
    assert result.forward_backward_seconds + result.optimizer_seconds + result.other_seconds == pytest.approx(
        result.seconds
    )
    assert result.precision == cpu_features.auto_dtype() and result.packing == "sequential"  # the CPU default
    assert result.to_dict()["tokens_per_second"] > 0


def test_learning_rate_follows_transformers_cosine_with_warmup(tiny: tuple) -> None:
    from transformers import get_cosine_schedule_with_warmup

    model, tokenizer = tiny
    slot = AdapterSlot(model, SMALL)
    settings = TrainSettings(lr=1e-3, epochs=4, batch_size=1, warmup_steps=3)
    result = train(slot, _examples(tokenizer, 5), settings)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    reference = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=3, num_training_steps=20)
    expected = []
    for _ in range(20):
        expected.append(reference.get_last_lr()[0])
        optimizer.step()
        reference.step()
    assert result.learning_rates == pytest.approx(expected)
    assert lr_factor(5, 10, 0, "linear") == pytest.approx(0.5)
    assert lr_factor(5, 10, 2, "constant") == 1.0


def test_seals_step_cap(tiny: tuple) -> None:
    assert seal_epochs(2, 375, 2, 375) == (2, False)  # 2 * 375 // 2 = 375: at the cap, still trained
    assert seal_epochs(2, 376, 2, 375) == (0, True)  # 376 > 375: SEAL switches training off
    assert seal_epochs(3, 300, 2, 375) == (0, True)
    assert seal_epochs(3, 300, 2, None) == (3, False)
    model, tokenizer = tiny
    slot = AdapterSlot(model, SMALL)
    before = slot.lora_state()
    result = train(slot, _examples(tokenizer, 4), TrainSettings(epochs=3, batch_size=1, max_steps_cap=10))
    assert result.capped and result.steps == 0 and result.epochs_run == 0
    assert all(torch.equal(before[key], value) for key, value in slot.lora_state().items())


def test_same_seed_same_run_other_seed_other_order(tiny: tuple) -> None:
    model, tokenizer = tiny
    slot = AdapterSlot(model, SMALL)
    examples = _examples(tokenizer)
    settings = TrainSettings(lr=1e-2, epochs=2, batch_size=2, warmup_steps=0, seed=1)
    first = train(slot, examples, settings)
    first_state = slot.lora_state()
    slot.reset()
    second = train(slot, examples, settings)
    assert first.losses == second.losses
    assert all(torch.equal(first_state[key], value) for key, value in slot.lora_state().items())
    slot.reset()
    third = train(slot, examples, TrainSettings(lr=1e-2, epochs=2, batch_size=2, warmup_steps=0, seed=2))
    assert third.losses != first.losses


def test_gradient_accumulation_matches_a_bigger_batch(tiny: tuple) -> None:
    """The loss of a step is normalised over all its loss tokens, so accumulation changes nothing."""
    model, tokenizer = tiny
    slot = AdapterSlot(model, SMALL)
    examples = _examples(tokenizer, 4)
    big = train(slot, examples, TrainSettings(lr=1e-2, epochs=1, batch_size=4, warmup_steps=0))
    big_state = slot.lora_state()
    slot.reset()
    accumulated = train(slot, examples, TrainSettings(lr=1e-2, epochs=1, batch_size=2, grad_accum=2, warmup_steps=0))
    assert big.steps == accumulated.steps == 1
    assert accumulated.losses[0] == pytest.approx(big.losses[0], rel=1e-5)
    for key, value in slot.lora_state().items():
        assert torch.allclose(value, big_state[key], atol=1e-6)


def test_packed_and_sequential_batches_train_the_same(tiny: tuple) -> None:
    model, tokenizer = tiny
    slot = AdapterSlot(model, SMALL)
    examples = _examples(tokenizer, 7)
    # fp32-exact comparison: pinned, since `auto` is bf16 on bf16 CPUs (different layouts round differently there)
    settings = TrainSettings(lr=1e-2, epochs=2, batch_size=3, warmup_steps=1, packing="packed", dtype="fp32")
    packed = train(slot, examples, settings)
    packed_state = slot.lora_state()
    slot.reset()
    sequential = train(slot, examples, replace(settings, packing="sequential"))
    assert (packed.packing, sequential.packing) == ("packed", "sequential")
    assert packed.tokens == sequential.tokens and packed.steps == sequential.steps == 6
    assert sequential.losses == pytest.approx(packed.losses, rel=1e-4)
    for key, value in slot.lora_state().items():
        assert torch.allclose(value, packed_state[key], atol=1e-5)


def test_gradient_checkpointing_gives_the_same_run(tiny: tuple) -> None:
    model, tokenizer = tiny
    slot = AdapterSlot(model, SMALL)
    examples = _examples(tokenizer)
    settings = TrainSettings(lr=1e-2, epochs=1, batch_size=2, warmup_steps=0)
    plain = train(slot, examples, settings)
    slot.reset()
    checkpointed = train(slot, examples, replace(settings, grad_checkpointing=True))
    assert checkpointed.losses == pytest.approx(plain.losses, rel=1e-5)
    base = slot.model.get_base_model()
    assert not base.is_activation_checkpointing  # switched off again afterwards
    assert not getattr(base, "_require_grads_hooks", [])  # and no hook left behind


def test_long_and_empty_examples_are_skipped_and_counted(tiny: tuple) -> None:
    model, tokenizer = tiny
    slot = AdapterSlot(model, SMALL)
    examples = _examples(tokenizer, 4)
    no_loss = EncodedExample(examples[0].input_ids, tuple([IGNORE_INDEX] * examples[0].num_tokens))
    limit = min(example.num_tokens for example in examples)
    result = train(slot, [*examples, no_loss], TrainSettings(epochs=1, batch_size=1, max_len=limit))
    assert result.skipped_no_loss == 1
    assert result.skipped_too_long == sum(example.num_tokens > limit for example in examples) > 0
    assert result.examples == result.steps == 4 - result.skipped_too_long


def test_dtype_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setenv("SEAL_CPU_BF16", "off")  # auto on bf16 CPUs: tests/unit/ttt/test_cpu_precision.py
    assert resolve_precision("auto", cpu).name == "fp32"
    assert resolve_precision("fp32", cpu).autocast_dtype is None
    with pytest.raises(ValueError, match="CUDA"):
        resolve_precision("fp16", cpu)

    def gpu(capability: tuple[int, int], name: str) -> None:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: capability[0] >= 8)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)

    cuda = torch.device("cuda", 0)
    gpu((7, 5), "Tesla T4")
    t4 = resolve_precision("auto", cuda)
    assert (t4.name, t4.autocast_dtype, t4.grad_scaler) == ("fp16", torch.float16, True)
    with pytest.raises(ValueError, match="T4"):
        resolve_precision("bf16", cuda)
    gpu((8, 0), "NVIDIA A100")
    a100 = resolve_precision("auto", cuda)
    assert (a100.name, a100.autocast_dtype, a100.grad_scaler) == ("bf16", torch.bfloat16, False)


def test_settings_are_validated() -> None:
    defaults = TrainSettings()
    assert (defaults.batch_size, defaults.warmup_steps, defaults.max_steps_cap, defaults.lr_schedule) == (
        2,
        11,
        375,
        "cosine",
    )
    bad_values = ({"lr": 0}, {"batch_size": 0}, {"dtype": "fp8"}, {"lr_schedule": "step"}, {"packing": "padded"})
    for bad in bad_values:
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrainSettings(**bad)  # type: ignore[arg-type]


def test_no_trainable_parameters_is_an_error(tiny: tuple) -> None:
    model, tokenizer = tiny
    for param in model.parameters():
        param.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train(model, _examples(tokenizer, 2), TrainSettings())


def test_mean_loss_is_hfs_token_weighted_loss(tiny: tuple) -> None:
    model, tokenizer = tiny
    examples = _examples(tokenizer, 5)
    # HF's loss runs in fp32 here, so the comparison pins fp32 (`auto` is bf16 on bf16 CPUs)
    assert mean_loss(model, examples, dtype="fp32") == pytest.approx(_per_sequence_mean_loss(model, examples), rel=1e-5)
    assert math.isfinite(mean_loss(model, examples))
