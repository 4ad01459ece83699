"""The memory plan: parameter counts from the shape, the terms, the budget, the advice that makes a plan fit, and
the refusal of a run that does not fit before anything is written. (Its accuracy against measured peaks is
bench/memory_plan.py's job: measuring takes minutes.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from runners.cli import main
from runners.config import load_config
from runners.memory_check import plan
from ttt.memory_plan import GIB, KNOWN_SHAPES, ModelShape, generation_peak, training_peak


def test_parameter_counts_match_the_published_sizes() -> None:
    # Llama-3.2-1B: 1.24 B parameters (tied embeddings); Qwen2.5-7B: 7.6 B (untied; its q/k/v biases are ~0.1 %).
    assert KNOWN_SHAPES["meta-llama/Llama-3.2-1B-Instruct"].parameters == pytest.approx(1.236e9, rel=0.005)
    assert KNOWN_SHAPES["Qwen/Qwen2.5-7B"].parameters == pytest.approx(7.616e9, rel=0.005)
    assert KNOWN_SHAPES["smollm2-135m"].parameters == pytest.approx(134.5e6, rel=0.005)


def test_terms_scale_as_the_formula_says() -> None:
    shape = ModelShape(vocab=1000, hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, head_dim=16, tied=False)
    base = dict(tokens=100, loss_tokens=100, rank=4, targets=("q_proj", "v_proj"), dtype="fp32", device="cpu")
    plain = training_peak(shape, grad_checkpointing=False, **base).terms
    kept = 4 * 64 + 3 * 128 + 64  # norms, attention and MLP internals, plus q/v's shared input
    assert shape.saved_per_layer(("q_proj", "v_proj")) == kept
    assert plain["activations"] == 100 * 2 * kept * 4
    assert plain["logits"] == 100 * 1000 * 4 * 3
    assert plain["lora"] == 2 * 4 * ((64 + 64) + (64 + 32)) * 16
    checkpointed = training_peak(shape, grad_checkpointing=True, **base).terms
    assert checkpointed["activations"] == 100 * (2 * 64 + kept) * 4
    every = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert shape.saved_per_layer(every) == 4 * 64 + 3 * 128 + 64 + 64 + 64 + 128  # o's input is heads x head_dim
    gpu = training_peak(shape, grad_checkpointing=False, **{**base, "device": "cuda"}).terms
    half = training_peak(shape, grad_checkpointing=False, **{**base, "dtype": "bf16", "device": "cuda"}).terms
    assert half["weights"] * 2 == gpu["weights"] and half["activations"] * 2 == gpu["activations"]
    # bf16 on a CPU: 2-byte weights, but the fp32 LoRA sums keep the activations (and the KV cache) in fp32
    cpu_half = training_peak(shape, grad_checkpointing=False, **{**base, "dtype": "bf16"}).terms
    assert cpu_half["weights"] * 2 == plain["weights"] and cpu_half["activations"] == plain["activations"]
    decode = generation_peak(shape, rows=3, prompt_tokens=10, new_tokens=5, dtype="fp32", device="cpu").terms
    assert decode["kv_cache"] == 2 * 2 * 32 * 4 * 3 * 15


def test_a_plan_that_does_not_fit_names_the_change_that_does() -> None:
    model = "model.spec=meta-llama/Llama-3.2-3B-Instruct"
    result = plan(load_config("arc_ttt_oracle", "a100-40", [model]))
    assert result is not None and not result.fits and result.budget == 40 * GIB
    assert result.worst.phase == "augmented inference"
    assert result.advice is not None and result.advice.startswith("set infer.max_tokens=4096 (peak ")
    fixed = plan(load_config("arc_ttt_oracle", "a100-40", [model, "infer.max_tokens=4096"]))
    assert fixed is not None and fixed.fits
    several = plan(load_config("arc_ttt_oracle", "a100-40", ["model.spec=Qwen/Qwen2.5-7B"]))
    assert several is not None and several.advice is not None and several.advice.startswith("--set ")
    hopeless = plan(load_config("arc_ttt_oracle", "t4", ["model.spec=Qwen/Qwen2.5-7B"]))
    assert hopeless is not None and hopeless.advice is not None and "a bigger GPU or a smaller model" in hopeless.advice


def test_seal_plan_prints_every_phase_and_exits_1_when_it_does_not_fit() -> None:
    runner = CliRunner()
    fits = runner.invoke(main, ["plan", "arc_ttt_oracle", "--profile", "a100-40"])
    assert fits.exit_code == 0, fits.output
    assert "inner-loop training" in fits.output and "augmented inference" in fits.output
    refused = runner.invoke(main, ["plan", "knowledge_seal", "--profile", "t4", "--json"])
    assert refused.exit_code == 1
    data = json.loads(refused.output)
    assert not data["fits"] and {p["phase"] for p in data["phases"]} >= {"passage update", "behaviour cloning (SFT)"}
    unknown = runner.invoke(main, ["plan", "arc_ttt_oracle", "--set", "model.spec=someone/unknown-model"])
    assert unknown.exit_code == 1 and "its shape is not in the table" in unknown.output
    assert "nothing to plan" in runner.invoke(main, ["plan", "selftest"]).output


def test_a_run_that_does_not_fit_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    base = ["ttt", "run", "demo_ttt", "--run-dir", str(run_dir), "--profile", "cpu", "--no-progress", "--limit", "0"]
    refused = CliRunner().invoke(main, [*base, "--set", "run.memory_budget_gib=0.5"])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "the memory plan does not fit: inner-loop training needs" in refused.output
    assert "of 0.50 GiB (run.memory_budget_gib)" in refused.output and "run.memory_check=false" in refused.output
    assert not run_dir.exists()
    forced = CliRunner().invoke(main, [*base, "--set", "run.memory_budget_gib=0.5", "--set", "run.memory_check=false"])
    assert forced.exit_code == 0, forced.output
    assert (run_dir / "manifest.json").is_file()


@pytest.mark.parametrize("mode", ["on", "off"])
def test_auto_on_a_cpu_is_planned_in_the_dtype_the_workers_resolve(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEAL_CPU_BF16", mode)
    result = plan(load_config("demo", "cpu", []))
    assert result is not None and result.device == "cpu"
    assert result.dtype == ("bf16" if mode == "on" else "fp32")
    weights = {t.phase: t.terms["weights"] for t in result.phases}["passage update"]
    assert weights == KNOWN_SHAPES["smollm2-135m"].parameters * (2 if mode == "on" else 4)
    assert any("bf16 on this CPU" in note for note in result.notes) == (mode == "on")


def test_plan_notes_bf16_on_a_t4_and_reports_what_it_planned() -> None:
    result = plan(load_config("arc_ttt_oracle", "t4", ["train.dtype=bf16"]))
    assert result is not None and result.dtype == "bf16"
    assert any("no bf16 hardware" in note for note in result.notes)
    data = result.to_dict()
    assert (data["model"], data["profile"], data["dtype"]) == ("meta-llama/Llama-3.2-1B-Instruct", "t4", "bf16")
    default = plan(load_config("arc_ttt_oracle", "t4", []))
    assert default is not None and default.dtype == "fp16" and not default.notes


def test_a_gpu_profile_of_ones_own_says_where_its_budget_comes_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = tmp_path / "h100.yaml"
    profile.write_text("train: {dtype: bf16}\n", encoding="utf-8")
    monkeypatch.setattr("runners.memory_check.local_gpu_gib", lambda: None)  # this machine has no GPU either way
    assumed = plan(load_config("arc_ttt_oracle", str(profile), []))
    assert assumed is not None and assumed.device == "cuda" and assumed.budget == 15 * GIB
    assert "assumed" in assumed.budget_source and "run.memory_budget_gib" in assumed.budget_source
    monkeypatch.setattr("runners.memory_check.local_gpu_gib", lambda: 80.0)  # as nvidia-smi reports an H100
    found = plan(load_config("arc_ttt_oracle", str(profile), []))
    assert found is not None and found.budget == 80 * GIB and found.budget_source == "this machine's GPU"
    given = plan(load_config("arc_ttt_oracle", str(profile), ["run.memory_budget_gib=40"]))
    assert given is not None and given.budget == 40 * GIB and given.budget_source == "run.memory_budget_gib"


def test_advice_and_errors_read_as_sentences() -> None:
    # weights alone exceed the budget: no key the plan can shrink helps, and the advice says so without a blank
    stuck = ["model.spec=Qwen/Qwen2.5-7B", "train.max_len=256", "infer.max_tokens=512"]
    result = plan(load_config("arc_ttt_oracle", "t4", stuck))
    assert result is not None and result.advice is not None
    assert result.advice.startswith("no smaller setting lowers the peak of ") and "  " not in result.advice
    on_cpu = plan(load_config("knowledge_seal", "cpu", ["run.memory_budget_gib=1"]))
    assert on_cpu is not None and on_cpu.advice is not None and "a machine with more memory" in on_cpu.advice
    runner = CliRunner()
    missing = runner.invoke(main, ["plan", "arc_ttt_oracle", "--set", "model.spec=/no/such/model"])
    assert missing.exit_code == 1 and "no such folder" in missing.output and "Traceback" not in missing.output
    unknown = runner.invoke(main, ["plan", "arc_ttt_oracle", "--set", "model.spec=someone/unknown-model"])
    assert "or run with run.memory_check=false" in unknown.output
