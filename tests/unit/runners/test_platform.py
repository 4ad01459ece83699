"""Platform detection and profile choice (GPU facts are constructed: no GPU exists on CI machines)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from runners.cli import main
from runners.platform import GpuInfo, PlatformInfo, choose_profile, default_runs_root, detect_kind


@pytest.mark.parametrize(
    ("gpu", "profile"),
    [
        (None, "cpu"),
        (GpuInfo("Tesla T4", 15.0, bf16=False), "t4"),
        (GpuInfo("Tesla V100-SXM2-16GB", 16.0, bf16=False), "t4"),
        (GpuInfo("NVIDIA L4", 22.5, bf16=True), "l4"),
        (GpuInfo("NVIDIA A100-SXM4-40GB", 39.6, bf16=True), "a100-40"),
        (GpuInfo("NVIDIA A100-SXM4-80GB", 79.2, bf16=True), "a100-80"),
        (GpuInfo("NVIDIA H100 80GB HBM3", 79.6, bf16=True), "a100-80"),
        (GpuInfo("NVIDIA GeForce RTX 4090", 24.0, bf16=True), "l4"),
    ],
)
def test_profile_choice(gpu: GpuInfo | None, profile: str) -> None:
    info = PlatformInfo("local", (gpu,) if gpu else (), 8)
    assert choose_profile(info) == profile


def test_kaggle_gets_its_own_profile() -> None:
    for gpu in (GpuInfo("Tesla T4", 15.0, bf16=False), GpuInfo("Tesla P100-PCIE-16GB", 16.0, bf16=False)):
        assert choose_profile(PlatformInfo("kaggle", (gpu,), 4)) == "kaggle"
    assert choose_profile(PlatformInfo("kaggle", (), 4)) == "cpu"
    from runners.config import load_config

    kaggle, t4 = load_config("arc_ttt_oracle", "kaggle"), load_config("arc_ttt_oracle", "t4")
    assert kaggle.profile == "kaggle" and kaggle.train == t4.train and kaggle.lora == t4.lora


def test_platform_kind_and_runs_root(monkeypatch, tmp_path: Path) -> None:
    assert detect_kind({"COLAB_RELEASE_TAG": "x"}) == "colab"
    assert detect_kind({"KAGGLE_KERNEL_RUN_TYPE": "Interactive"}) == "kaggle"
    assert detect_kind({}) == "local"
    monkeypatch.delenv("SEAL_RUNS", raising=False)
    assert default_runs_root("kaggle") == Path("/kaggle/working/seal-runs")
    assert default_runs_root("local") == Path("runs")
    monkeypatch.setenv("SEAL_RUNS", str(tmp_path))
    assert default_runs_root("colab") == tmp_path


def test_profiles_set_dtype_rank_context_batch_and_checkpointing() -> None:
    from runners.config import load_config

    t4 = load_config("arc_ttt_oracle", "t4")
    a100 = load_config("arc_ttt_oracle", "a100-80")
    cpu = load_config("arc_ttt_oracle", "cpu")
    assert (t4.train.dtype, a100.train.dtype, cpu.train.dtype) == ("fp16", "bf16", "auto")  # cpu: by its hardware
    assert t4.lora.rank < a100.lora.rank and t4.train.max_len < a100.train.max_len
    assert t4.train.grad_checkpointing and not cpu.train.grad_checkpointing


def test_doctor_reports_platform_profile_packages_and_ollama(monkeypatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:9")  # discard port: nothing answers
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    needles = ("platform:", "CPU bf16:", "profile (auto):  cpu", "GiB free", "default model:", "no answer at", "torch")
    for needle in needles:
        assert needle in result.output
