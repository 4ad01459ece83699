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
    half = training_peak(shape, grad_checkpointing=False, **{**base, "dtype": "bf16"}).terms
    assert half["weights"] * 2 == plain["weights"] and half["activations"] * 2 == plain["activations"]
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
