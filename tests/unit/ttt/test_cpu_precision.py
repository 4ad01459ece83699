"""bf16 on CPUs that have it: detection from cpuinfo text, the SEAL_CPU_BF16 override, what `auto` resolves to, and
one real LoRA training run in bf16 on the CPU (base weights bf16, LoRA weights fp32, finite decreasing loss)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from ttt import cpu_features
from ttt.examples import encode_messages
from ttt.lora import AdapterSlot, LoraSettings
from ttt.models import load_model
from ttt.train import TrainSettings, mean_loss, resolve_precision, train

_HEADER = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Some CPU\n"
SAPPHIRE_RAPIDS = _HEADER + "flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n\nprocessor\t: 1\n"
ZEN4 = _HEADER + "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
SKYLAKE = _HEADER + "flags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull bf16 i8mm\n"


def test_flags_are_parsed_from_cpuinfo_text() -> None:
    assert {"amx_bf16", "amx_tile", "avx512_bf16"} <= cpu_features.parse_flags(SAPPHIRE_RAPIDS)
    assert "bf16" in cpu_features.parse_flags(ARM)
    assert cpu_features.parse_flags("") == frozenset()
    assert cpu_features.bf16_kind(cpu_features.parse_flags(SAPPHIRE_RAPIDS)) == "amx"
    assert cpu_features.bf16_kind(cpu_features.parse_flags(ZEN4)) == "avx512_bf16"
    assert cpu_features.bf16_kind(cpu_features.parse_flags(SKYLAKE)) is None
    assert cpu_features.bf16_kind(cpu_features.parse_flags(ARM)) is None  # Arm bf16 has not been measured here
    assert cpu_features.bf16_kind({"amx_tile"}) is None  # tiles without bf16 (int8 only) do not count


def test_auto_stays_fp32_on_every_cpu_and_the_override_wins() -> None:
    """bf16 missed the held-out loss target on the hardware measured, so no kind gets it under `auto` (yet)."""
    for cpuinfo, expected in ((SAPPHIRE_RAPIDS, "fp32"), (ZEN4, "fp32"), (SKYLAKE, "fp32"), ("", "fp32")):
        assert cpu_features.auto_dtype({}, cpuinfo) == expected, cpuinfo
        assert cpu_features.auto_dtype({cpu_features.BF16_ENV: "auto"}, cpuinfo) == expected
        assert cpu_features.auto_dtype({cpu_features.BF16_ENV: "on"}, cpuinfo) == "bf16"
        assert cpu_features.auto_dtype({cpu_features.BF16_ENV: " OFF "}, cpuinfo) == "fp32"
    with pytest.raises(ValueError, match="SEAL_CPU_BF16.*auto, on, off"):
        cpu_features.auto_dtype({cpu_features.BF16_ENV: "yes"}, ZEN4)
    described = cpu_features.describe({cpu_features.BF16_ENV: "off"}, SAPPHIRE_RAPIDS)
    assert described == {"bf16_hardware": "amx", "SEAL_CPU_BF16": "off", "auto": "fp32"}


@pytest.mark.parametrize(("kind", "mode", "expected"), [
    ("amx", "auto", "fp32"), ("avx512_bf16", "auto", "fp32"), (None, "auto", "fp32"),
    (None, "on", "bf16"), ("amx", "on", "bf16"), ("amx", "off", "fp32"),
])  # fmt: skip
def test_resolve_precision_auto_on_cpu(monkeypatch: pytest.MonkeyPatch, kind: str | None, mode: str, expected: str):
    monkeypatch.setattr(cpu_features, "detected_kind", lambda: kind)
    monkeypatch.setattr(cpu_features, "BF16_KINDS", ())  # the shipped rule, whatever a later measurement adds
    monkeypatch.setenv(cpu_features.BF16_ENV, mode)
    cpu = torch.device("cpu")
    auto = resolve_precision("auto", cpu)
    assert auto.name == expected and not auto.grad_scaler
    assert auto.autocast_dtype == (torch.bfloat16 if expected == "bf16" else None)
    # An explicit dtype is never second-guessed by the detection or the override.
    assert resolve_precision("fp32", cpu).name == "fp32"
    assert resolve_precision("bf16", cpu).name == "bf16"


def test_a_kind_added_to_the_rule_gets_bf16_under_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_features, "BF16_KINDS", (cpu_features.AMX,))
    assert cpu_features.auto_dtype({}, SAPPHIRE_RAPIDS) == "bf16"
    assert cpu_features.auto_dtype({}, ZEN4) == "fp32"
    assert cpu_features.auto_dtype({cpu_features.BF16_ENV: "off"}, SAPPHIRE_RAPIDS) == "fp32"


def test_lora_training_in_bf16_on_cpu(monkeypatch: pytest.MonkeyPatch, tiny_path: str, tiny_cache: Path) -> None:
    monkeypatch.setenv(cpu_features.BF16_ENV, "on")
    precision = resolve_precision("auto", torch.device("cpu"))
    model, tokenizer = load_model("tiny", cache_dir=tiny_cache, dtype=precision.autocast_dtype)  # as the workers do
    slot = AdapterSlot(model, LoraSettings(rank=4, alpha=8))
    examples: list[Any] = [
        encode_messages(tokenizer, [{"role": "user", "content": f"[[{i}, {i + 1}]] ->"},
                                    {"role": "assistant", "content": f"[[{(i * 7) % 10}]]#"}])
        for i in range(4)
    ]  # fmt: skip
    before = mean_loss(slot, examples)
    result = train(slot, examples, TrainSettings(lr=1e-2, epochs=8, batch_size=4, warmup_steps=0, seed=0))
    after = mean_loss(slot, examples)

    assert result.precision == "bf16"
    base = {p.dtype for name, p in slot.model.named_parameters() if "lora_" not in name}
    assert base == {torch.bfloat16}
    assert {p.dtype for p in slot.trainable_parameters()} == {torch.float32}
    assert all(torch.isfinite(torch.tensor(result.losses)))
    assert result.losses[-1] < result.losses[0] and after < before
