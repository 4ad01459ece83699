"""bf16 on CPUs that have it: detection from cpuinfo text, the SEAL_CPU_BF16 override, what `auto` resolves to, and
one real LoRA training run in bf16 on the CPU (base weights bf16, LoRA weights fp32, finite decreasing loss), and a
small LoRA update that survives a bf16 forward (the LoRA sums kept in fp32)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from peft.tuners.lora import LoraLayer

from ttt import cpu_features, lora
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


def test_auto_uses_bf16_on_bf16_hardware_only_and_the_override_wins() -> None:
    """AMX and AVX512-BF16 measured within the held-out loss target (with fp32 LoRA sums); the rest stay fp32."""
    cases = ((SAPPHIRE_RAPIDS, "bf16"), (ZEN4, "bf16"), (SKYLAKE, "fp32"), (ARM, "fp32"), ("", "fp32"))
    for cpuinfo, expected in cases:
        assert cpu_features.auto_dtype({}, cpuinfo) == expected, cpuinfo
        assert cpu_features.auto_dtype({cpu_features.BF16_ENV: "auto"}, cpuinfo) == expected
        assert cpu_features.auto_dtype({cpu_features.BF16_ENV: "on"}, cpuinfo) == "bf16"
        assert cpu_features.auto_dtype({cpu_features.BF16_ENV: " OFF "}, cpuinfo) == "fp32"
    with pytest.raises(ValueError, match="SEAL_CPU_BF16.*auto, on, off"):
        cpu_features.auto_dtype({cpu_features.BF16_ENV: "yes"}, ZEN4)
    described = cpu_features.describe({cpu_features.BF16_ENV: "off"}, SAPPHIRE_RAPIDS)
    assert described == {"bf16_hardware": "amx", "SEAL_CPU_BF16": "off", "auto": "fp32"}
    assert cpu_features.describe({}, ZEN4) == {"bf16_hardware": "avx512_bf16", "SEAL_CPU_BF16": "auto", "auto": "bf16"}


@pytest.mark.parametrize(("kind", "mode", "expected"), [
    ("amx", "auto", "bf16"), ("avx512_bf16", "auto", "bf16"), (None, "auto", "fp32"),
    (None, "on", "bf16"), ("amx", "on", "bf16"), ("amx", "off", "fp32"),
])  # fmt: skip
def test_resolve_precision_auto_on_cpu(monkeypatch: pytest.MonkeyPatch, kind: str | None, mode: str, expected: str):
    monkeypatch.setattr(cpu_features, "detected_kind", lambda: kind)
    monkeypatch.setenv(cpu_features.BF16_ENV, mode)
    cpu = torch.device("cpu")
    auto = resolve_precision("auto", cpu)
    assert auto.name == expected and not auto.grad_scaler
    assert auto.autocast_dtype == (torch.bfloat16 if expected == "bf16" else None)
    # An explicit dtype is never second-guessed by the detection or the override.
    assert resolve_precision("fp32", cpu).name == "fp32"
    assert resolve_precision("bf16", cpu).name == "bf16"


def test_only_the_kinds_in_the_rule_get_bf16_under_auto(monkeypatch: pytest.MonkeyPatch) -> None:
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


def test_a_small_lora_update_survives_a_bf16_forward(tiny_cache: Path) -> None:
    """bf16(base + delta) rounds a delta under half an ulp of the base output back to the base output; the slot keeps
    LoRA sums in fp32, so a bf16 layer still adds the update. Checked on one LoRA layer of the tiny model under bf16
    autocast, against the update computed in fp32; with the fp32 sums removed the same check fails (it can fail)."""
    model, _ = load_model("tiny", cache_dir=tiny_cache, dtype=torch.bfloat16)
    slot = AdapterSlot(model, LoraSettings(rank=4, alpha=8))
    assert lora.required_autocast(slot.model) == torch.bfloat16  # generation runs under it too (HFGenerator)
    fp32_model, _ = load_model("tiny", cache_dir=tiny_cache)
    assert lora.required_autocast(AdapterSlot(fp32_model, LoraSettings(rank=4, alpha=8)).model) is None

    layer = next(m for m in slot.model.modules() if isinstance(m, LoraLayer))
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    x = torch.randn(1, 16, a.shape[1], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base_out = layer.get_base_layer()(x.to(torch.bfloat16)).float()
        b.copy_(torch.randn(b.shape, generator=torch.Generator().manual_seed(1)))
        raw = (x @ a.T @ b.T) * layer.scaling["default"]
        b.mul_(1e-3 * base_out.abs().mean() / raw.abs().mean())  # an update ~0.1 % of the output: under half an ulp
        want = ((x @ a.T @ b.T) * layer.scaling["default"]).flatten()

    def update() -> torch.Tensor:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            adapted = layer(x).float()
            with slot.model.disable_adapter():
                base = layer(x).float()
        return (adapted - base).flatten()

    cosine = torch.nn.functional.cosine_similarity
    got = update()
    assert cosine(got, want, dim=0) > 0.99 and 0.95 < float(got.norm() / want.norm()) < 1.05

    for module in slot.model.modules():  # bf16 sums, as before keep_lora_sums_fp32
        for key, hook in list(module._forward_hooks.items()):
            if hook is lora._output_to_fp32:
                del module._forward_hooks[key]
    rounded = update()
    assert cosine(rounded, want, dim=0) < 0.8
