"""Fold a trained LoRA adapter into its base model's weights and write a plain model folder, one tensor at a time.

ReST-EM merges the behaviour-cloned adapter after every iteration. Loading the base model, attaching the adapter
and calling PEFT's `merge_and_unload` needs the whole model in fp32 in memory (28 GB for a 7B: more than a Colab
machine has) and, on this project's CPUs, spends most of its time faulting in fresh pages. This module streams
instead: it reads the base checkpoint's safetensors files through a memory map, computes W + scale · B·A for each
adapted weight in fp32 (the operations PEFT performs, in the same order, so the result is bit for bit PEFT's), and
writes each tensor straight to the new safetensors file. Peak memory is one tensor, not one model.

The output is what the loading merge wrote before: every floating-point weight in fp32, the base folder's config
(dtype set to float32), generation config and tokenizer files copied. Adapters this streaming path does not cover
(DoRA, embedding or convolution LoRA, `modules_to_save`, rank or alpha patterns, `fan_in_fan_out`, weights whose
names the checkpoint spells differently) and checkpoints that are not safetensors fall back to the loading merge.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import re
import shutil
import struct
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch

from ttt.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, _atomic_replace_dir

WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
SHARD_BYTES = 5 * 1024**3  # transformers' default shard size
# Files of a model folder that are not weights: copied beside the merged weights so the folder loads on its own.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".gguf", ".msgpack", ".h5", ".ckpt", ".index.json")
_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_UPCAST = {"F16", "BF16"}  # floating weights written as F32, as the loading merge (dtype=float32) did
_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>[AB])(?:\.[^.]+)?\.weight$")


class StreamingMergeUnsupported(Exception):
    """This adapter or checkpoint needs the loading merge (the reason says why)."""


@dataclass(frozen=True)
class _Entry:
    """One tensor of a safetensors file: where its bytes lie in the memory-mapped file."""

    buffer: mmap.mmap
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute offset of the first byte in the file
    end: int

    def tensor(self) -> torch.Tensor:
        count = math.prod(self.shape)
        if count == 0:
            return torch.empty(self.shape, dtype=_DTYPES[self.dtype])
        flat = torch.frombuffer(self.buffer, dtype=_DTYPES[self.dtype], count=count, offset=self.start)
        return flat.view(self.shape)


def _close_quietly(buffer: mmap.mmap) -> None:
    try:
        buffer.close()
    except BufferError:  # a tensor still views it (an exception's traceback holds one): the collector closes it later
        pass


def _open_safetensors(path: Path, stack: ExitStack) -> dict[str, _Entry]:
    with open(path, "rb") as handle:
        # ACCESS_COPY gives torch.frombuffer the writable buffer it wants without ever writing to the file.
        buffer = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
    stack.callback(_close_quietly, buffer)
    (header_len,) = struct.unpack("<Q", buffer[:8])
    header = json.loads(buffer[8 : 8 + header_len])
    base = 8 + header_len
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _DTYPES:
            raise StreamingMergeUnsupported(f"{path.name}: tensor {name} has dtype {info['dtype']}")
        begin, finish = info["data_offsets"]
        entries[name] = _Entry(buffer, info["dtype"], tuple(info["shape"]), base + begin, base + finish)
    return entries


def _base_tensors(model_dir: Path, stack: ExitStack) -> dict[str, _Entry]:
    index = model_dir / WEIGHTS_INDEX
    if index.is_file():
        files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    elif (model_dir / WEIGHTS_FILE).is_file():
        files = [WEIGHTS_FILE]
    else:
        raise StreamingMergeUnsupported(f"{model_dir} has no {WEIGHTS_FILE} or {WEIGHTS_INDEX}")
    tensors: dict[str, _Entry] = {}
    for name in files:
        tensors.update(_open_safetensors(model_dir / name, stack))
    return tensors


def _adapter_factors(adapter_dir: Path, stack: ExitStack) -> tuple[dict[str, tuple[_Entry, _Entry]], float]:
    """{module name: (A, B)} and the scale alpha / r (alpha / sqrt(r) with rsLoRA) of a saved PEFT LoRA adapter."""
    config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    if config.get("peft_type", "LORA") != "LORA":
        raise StreamingMergeUnsupported(f"peft_type {config.get('peft_type')}")
    for key in ("use_dora", "fan_in_fan_out", "modules_to_save", "rank_pattern", "alpha_pattern"):
        if config.get(key):
            raise StreamingMergeUnsupported(f"adapter config sets {key}")
    if config.get("bias", "none") != "none":
        raise StreamingMergeUnsupported(f"adapter bias {config['bias']!r}")
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    parts: dict[str, dict[str, _Entry]] = {}
    for name, entry in _open_safetensors(adapter_dir / ADAPTER_WEIGHTS, stack).items():
        match = _LORA_KEY.match(name)
        if match is None:
            raise StreamingMergeUnsupported(f"adapter tensor {name} is not a linear LoRA factor")
        parts.setdefault(match["module"], {})[match["part"]] = entry
    factors = {}
    for module, pair in parts.items():
        if set(pair) != {"A", "B"}:
            raise StreamingMergeUnsupported(f"adapter module {module} lacks lora_A or lora_B")
        factors[module] = (pair["A"], pair["B"])
    return factors, scale


def _merged(weight: _Entry, factors: tuple[_Entry, _Entry] | None, scale: float) -> torch.Tensor:
    """The tensor as written: fp32 (for 16-bit floats) plus, for an adapted weight, PEFT's fp32 delta."""
    tensor = weight.tensor()
    if factors is None:
        return tensor.float() if weight.dtype in _UPCAST else tensor
    a, b = (f.tensor().float() for f in factors)
    out = tensor.float() if weight.dtype != "F32" else tensor.clone()
    if b.shape[1] != a.shape[0] or (b.shape[0], a.shape[1]) != tuple(out.shape):
        raise StreamingMergeUnsupported(f"LoRA factors {tuple(b.shape)}·{tuple(a.shape)} do not fit {weight.shape}")
    out += (b @ a) * scale  # PEFT's get_delta_weight, then its in-place merge
    return out


def _write_safetensors(
    path: Path, names: list[str], produce: Any, shapes: dict[str, tuple[tuple[int, ...], str]]
) -> None:
    """Write `names` to one safetensors file, calling `produce(name)` for each tensor's bytes in turn."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in names:
        shape, dtype = shapes[name]
        size = math.prod(shape) * torch.empty((), dtype=_DTYPES[dtype]).element_size()
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as the format asks
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(encoded)))
        out.write(encoded)
        for name in names:
            _write_tensor(out, produce(name), header[name]["data_offsets"][1] - header[name]["data_offsets"][0])


def _write_tensor(out: BinaryIO, tensor: torch.Tensor, size: int) -> None:
    data = tensor.contiguous().reshape(-1).view(torch.uint8)
    if data.numel() != size:
        raise RuntimeError(f"tensor of {data.numel()} bytes where the header promised {size}")
    out.write(memoryview(data.numpy()))


def _shards(names: list[str], sizes: dict[str, int]) -> list[list[str]]:
    shards: list[list[str]] = [[]]
    used = 0
    for name in names:
        if shards[-1] and used + sizes[name] > SHARD_BYTES:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += sizes[name]
    return shards


def _copy_model_files(model_dir: Path, out: Path) -> None:
    """Config, generation config, tokenizer and chat template: every top-level file that is not a weight file."""
    for source in model_dir.iterdir():
        if source.is_file() and not source.name.endswith(_WEIGHT_SUFFIXES) and not source.name.startswith("."):
            shutil.copy(source, out / source.name)  # follows the hub cache's symlinks
    config_path = out / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    for key in ("dtype", "torch_dtype"):
        if key in config or key == "dtype":
            config[key] = "float32"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _stream_merge(model_dir: Path, adapter_dir: Path, tmp: Path) -> None:
    with ExitStack() as stack:
        base = _base_tensors(model_dir, stack)
        factors, scale = _adapter_factors(adapter_dir, stack)
        targets = {f"{module}.weight": pair for module, pair in factors.items()}
        missing = sorted(set(targets) - set(base))
        if missing:
            raise StreamingMergeUnsupported(f"the checkpoint has no tensor {missing[0]} for the adapter's factors")
        for name in targets:
            if base[name].dtype not in ("F32", *_UPCAST) or len(base[name].shape) != 2:
                raise StreamingMergeUnsupported(f"{name} is not a 2-D floating weight")
        names = sorted(base)
        shapes = {
            n: (base[n].shape, "F32" if n in targets or base[n].dtype in _UPCAST else base[n].dtype) for n in names
        }
        sizes = {n: math.prod(s) * torch.empty((), dtype=_DTYPES[d]).element_size() for n, (s, d) in shapes.items()}
        shards = _shards(names, sizes)

        def produce(name: str) -> torch.Tensor:
            return _merged(base[name], targets.get(name), scale)

        if len(shards) == 1:
            _write_safetensors(tmp / WEIGHTS_FILE, names, produce, shapes)
        else:
            weight_map = {}
            for number, shard in enumerate(shards, start=1):
                file = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
                _write_safetensors(tmp / file, shard, produce, shapes)
                weight_map.update(dict.fromkeys(shard, file))
            index = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": weight_map}
            (tmp / WEIGHTS_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    _copy_model_files(model_dir, tmp)


def _loading_merge(model_path: str, adapter_dir: Path, tmp: Path, tokenizer: Any) -> None:
    """PEFT's merge on the loaded model: for the adapters and checkpoints the streaming path does not cover."""
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    with_adapter = PeftModel.from_pretrained(base, str(adapter_dir))
    # PEFT only warns when the adapter's tensors and the model's modules do not match: a silent partial merge.
    saved = set(load_file(adapter_dir / ADAPTER_WEIGHTS))
    expected = set(get_peft_model_state_dict(with_adapter))
    if saved != expected:
        odd = sorted(saved - expected) or sorted(expected - saved)
        raise ValueError(
            f"the adapter in {adapter_dir} does not fit the model {model_path}: {len(saved ^ expected)} tensors "
            f"do not match, e.g. {odd[0]} (was it trained on another model?)"
        )
    merged = with_adapter.merge_and_unload()
    merged.save_pretrained(tmp, safe_serialization=True)
    (tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(model_path)).save_pretrained(tmp)


def _fsync_tree(folder: Path) -> None:
    """Flush a finished folder to disk before it is renamed into place, so a crash cannot expose empty files."""
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def merge_adapter(model_path: str, adapter_dir: Path, out_dir: Path, tokenizer: Any = None) -> tuple[Path, str]:
    """Fold the adapter into the base weights (in fp32, so nothing is rounded) and write a plain model to `out_dir`,
    atomically. Returns (out_dir, how): "streaming", or "loading: <reason>" when it fell back to PEFT's merge.
    `tokenizer` is saved by the loading merge only; the streaming merge copies the base folder's tokenizer files.

    The next ReST-EM round and any generator load the result like any local model, with no PEFT involved.
    """
    out_dir, adapter_dir, model_dir = Path(out_dir), Path(adapter_dir), Path(model_path)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".tmp-{out_dir.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        try:
            _stream_merge(model_dir, adapter_dir, tmp)
            how = "streaming"
        except StreamingMergeUnsupported as reason:
            shutil.rmtree(tmp)
            tmp.mkdir()
            _loading_merge(model_path, adapter_dir, tmp, tokenizer)
            how = f"loading: {reason}"
        _fsync_tree(tmp)
        _atomic_replace_dir(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir, how
