"""The streaming merge: W + scale · B·A written tensor by tensor equals PEFT's merge on the loaded model, bit for bit,
for fp32, bf16 and sharded checkpoints; the adapters it does not cover fall back to PEFT's merge and say so."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from ttt import merge
from ttt.merge import merge_adapter
from ttt.models import load_model


def _state(folder: Path) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).state_dict()


def _adapter(base_dir: str | Path, out: Path, seed: int = 0, **config: Any) -> Path:
    """A LoRA adapter with non-zero B (init_lora_weights=False), so merging changes every adapted weight."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    settings = {"r": 4, "lora_alpha": 8, "target_modules": "all-linear", "init_lora_weights": False, **config}
    get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **settings)).save_pretrained(out)
    return out


def _peft_merge(base_dir: str | Path, adapter: Path, out: Path) -> Path:
    out.mkdir()
    merge._loading_merge(str(base_dir), adapter, out, None)
    return out


def _assert_same_weights(left: Path, right: Path) -> None:
    a, b = _state(left), _state(right)
    assert a.keys() == b.keys()
    unequal = [key for key in a if not torch.equal(a[key], b[key])]
    assert unequal == [], f"{len(unequal)} tensors differ, e.g. {unequal[:3]}"


def _variant(tiny_path: str, out: Path, **save: Any) -> Path:
    """The tiny checkpoint saved another way (bf16, sharded), tokenizer files beside it."""
    dtype = save.pop("dtype", torch.float32)
    AutoModelForCausalLM.from_pretrained(tiny_path, dtype=dtype).save_pretrained(out, **save)
    for source in Path(tiny_path).iterdir():
        if source.name.startswith("tokenizer") or source.suffix == ".jinja":
            shutil.copy(source, out / source.name)
    return out


def test_streaming_merge_equals_peft_and_the_model_loads_plainly(tiny_path: str, tmp_path: Path) -> None:

    adapter = _adapter(tiny_path, tmp_path / "adapter")
    out, how = merge_adapter(tiny_path, adapter, tmp_path / "merged")
    assert how == "streaming" and out == tmp_path / "merged"
    assert not (out / "adapter_config.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "temporary folders left behind"
    _assert_same_weights(out, _peft_merge(tiny_path, adapter, tmp_path / "peft"))

    merged, tokenizer = load_model(str(out))
    _, base_tokenizer = load_model(tiny_path)
    assert tokenizer.chat_template == base_tokenizer.chat_template
    assert json.loads((out / "config.json").read_text())["dtype"] == "float32"
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_path), str(adapter)).eval()
    ids = torch.tensor([tokenizer("The lighthouse keeper wrote a letter.").input_ids])
    with torch.no_grad():
        expected = with_adapter(ids).logits
        with with_adapter.disable_adapter():
            assert (expected - with_adapter(ids).logits).abs().max() > 1e-4, "the adapter must change the model"
        torch.testing.assert_close(merged(ids).logits, expected, atol=1e-5, rtol=0)

    again, _ = merge_adapter(tiny_path, adapter, out)  # replaces the folder atomically
    assert again == out and (out / "model.safetensors").is_file()


def test_bf16_checkpoint_is_merged_in_fp32_like_peft(tiny_path: str, tmp_path: Path) -> None:
    base = _variant(tiny_path, tmp_path / "bf16", dtype=torch.bfloat16)
    assert {t.dtype for t in load_file(base / "model.safetensors").values()} == {torch.bfloat16}
    adapter = _adapter(base, tmp_path / "adapter")
    out, how = merge_adapter(str(base), adapter, tmp_path / "merged")
    assert how == "streaming"
    assert {t.dtype for t in load_file(out / "model.safetensors").values()} == {torch.float32}
    _assert_same_weights(out, _peft_merge(base, adapter, tmp_path / "peft"))


def test_sharded_checkpoint_in_sharded_out(tiny_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = _variant(tiny_path, tmp_path / "sharded", max_shard_size="200KB")
    assert (base / merge.WEIGHTS_INDEX).is_file()
    adapter = _adapter(base, tmp_path / "adapter", use_rslora=True)
    monkeypatch.setattr(merge, "SHARD_BYTES", 300_000)
    out, how = merge_adapter(str(base), adapter, tmp_path / "merged")
    assert how == "streaming"
    index = json.loads((out / merge.WEIGHTS_INDEX).read_text())
    assert len(set(index["weight_map"].values())) > 1 and not (out / "model.safetensors").exists()
    _assert_same_weights(out, _peft_merge(base, adapter, tmp_path / "peft"))


def test_adapters_it_does_not_cover_fall_back_to_peft(tiny_path: str, tmp_path: Path) -> None:
    adapter = _adapter(tiny_path, tmp_path / "adapter", use_dora=True)
    out, how = merge_adapter(tiny_path, adapter, tmp_path / "merged")
    assert how == "loading: adapter config sets use_dora"
    _assert_same_weights(out, _peft_merge(tiny_path, adapter, tmp_path / "peft"))
    assert (out / "tokenizer.json").is_file()


def test_an_adapter_for_another_model_is_refused_before_anything_is_written(tiny_path: str, tmp_path: Path) -> None:
    adapter = _adapter(tiny_path, tmp_path / "adapter")
    weights = load_file(adapter / "adapter_model.safetensors")
    from safetensors.torch import save_file

    save_file(
        {k.replace("layers.0.", "layers.99."): v for k, v in weights.items()}, adapter / "adapter_model.safetensors"
    )
    with pytest.raises(Exception, match="layers.99"):
        merge_adapter(tiny_path, adapter, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
