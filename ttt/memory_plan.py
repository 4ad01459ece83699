"""Predicted peak memory of a LoRA training step and of batched generation, from the model's shape alone.

The terms (bytes; L layers, hidden h, intermediate i, vocab V, KV heads × head dim = kv):
    runtime     the process before any model (CPU: interpreter + torch ≈ 340 MiB) or the CUDA context (≈ 500 MiB)
    autograd    the fixed cost of a training step (engine, optimizer and loss buffers): 160 MiB, measured on CPU
    weights     parameters × bytes per weight (fp32 4, fp16/bf16 2)
    (bf16 on a CPU: weights at 2 bytes, everything else at fp32's 4: the fp32 LoRA sums keep the residual stream,
    and so most saved activations and the adapted layers' KV cache, in fp32; an upper bound measured within 12 %)
    LoRA        LoRA parameters × 16 (fp32 weight, gradient, two AdamW moments)
    activations tokens × L × a × bytes per activation: what autograd keeps for backward, per layer and token
                a = 4h + 3i (norms, attention, the MLP's gate, up and SiLU) plus the input of each LoRA-adapted
                projection (a frozen projection needs no input to pass gradients on): h for q/k/v (one shared input),
                the attention output for o, h for gate/up, i for down. With gradient checkpointing
                tokens × (L × h + a) × bytes (each layer's input, and one layer redone)
    logits      loss tokens × V × 4 × 3 (fp32 logits, log-softmax and its gradient; this project's training loop
                computes logits at loss positions only); TRL's fused LM head (behaviour cloning) works in tiles of
                32,768 vocabulary columns: tokens × min(V, 32768) × 4 × 2
    KV cache    2 × L × kv × bytes × rows × (prompt + new tokens)
    prefill     rows × prompt × (4h + 2i) × bytes (one layer's intermediates: nothing is kept for backward)
The activation and logit counts were fitted to five SmolLM2 training peaks measured on this machine (256–2048
tokens, ranks 16/32, all projections or q/v only, with and without checkpointing: all within 7 %);
`bench/memory_plan.py` measures those and held-out points afresh and reports the error of every one. The GPU terms (the
CUDA context, 2-byte activations under autocast) follow the same counts and have not been measured here.

This module does not import torch: `seal plan` runs anywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIB = 2**20
GIB = 2**30
CPU_RUNTIME = 340 * MIB
CUDA_RUNTIME = 500 * MIB
AUTOGRAD = 160 * MIB
LOGIT_FACTOR = 3.0
TRL_LOGIT_TILE = 32768  # trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE (TRL 1.16)


@dataclass(frozen=True)
class ModelShape:
    """What memory depends on: a decoder-only transformer of the Llama / Qwen / SmolLM family."""

    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelShape:
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        return cls(
            vocab=int(config["vocab_size"]),
            hidden=hidden,
            intermediate=int(config["intermediate_size"]),
            layers=int(config["num_hidden_layers"]),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            tied=bool(config.get("tie_word_embeddings", False)),
        )

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each projection in one layer."""
        h, i, q, kv = self.hidden, self.intermediate, self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def parameters(self) -> int:
        per_layer = sum(a * b for a, b in self.linear_shapes().values()) + 2 * self.hidden
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.layers * per_layer + embeddings + self.hidden

    def saved_per_layer(self, targets: tuple[str, ...]) -> int:
        """Values autograd keeps per token and layer when `targets` carry LoRA (see the module docstring)."""
        chosen = set(targets)
        kept = 4 * self.hidden + 3 * self.intermediate
        kept += self.hidden if chosen & {"q_proj", "k_proj", "v_proj"} else 0
        kept += self.heads * self.head_dim if "o_proj" in chosen else 0
        kept += self.hidden if chosen & {"gate_proj", "up_proj"} else 0
        kept += self.intermediate if "down_proj" in chosen else 0
        return kept

    def lora_parameters(self, rank: int, targets: tuple[str, ...]) -> int:
        shapes = self.linear_shapes()
        return self.layers * sum(rank * (shapes[t][0] + shapes[t][1]) for t in targets if t in shapes)


# Public architecture constants of the models the README's table covers (their config.json files), for planning
# before a model is downloaded. A model folder's own config.json always wins.
KNOWN_SHAPES: dict[str, ModelShape] = {
    "smollm2-135m": ModelShape(49152, 576, 1536, 30, 9, 3, 64, True),
    "HuggingFaceTB/SmolLM2-135M-Instruct": ModelShape(49152, 576, 1536, 30, 9, 3, 64, True),
    "meta-llama/Llama-3.2-1B-Instruct": ModelShape(128256, 2048, 8192, 16, 32, 8, 64, True),
    "meta-llama/Llama-3.2-1B": ModelShape(128256, 2048, 8192, 16, 32, 8, 64, True),
    "meta-llama/Llama-3.2-3B-Instruct": ModelShape(128256, 3072, 8192, 28, 24, 8, 128, True),
    "meta-llama/Llama-3.2-3B": ModelShape(128256, 3072, 8192, 28, 24, 8, 128, True),
    "Qwen/Qwen2.5-7B": ModelShape(152064, 3584, 18944, 28, 28, 4, 128, False),
    "Qwen/Qwen2.5-7B-Instruct": ModelShape(152064, 3584, 18944, 28, 28, 4, 128, False),
    "meta-llama/Llama-3.1-8B-Instruct": ModelShape(128256, 4096, 14336, 32, 32, 8, 128, False),
}


def shape_of(spec: str, folder: str | Path | None = None) -> ModelShape:
    """The shape from `folder`/config.json when given and present, else from the table; a clear error otherwise."""
    if folder is not None and (Path(folder) / "config.json").is_file():
        return ModelShape.from_config(json.loads((Path(folder) / "config.json").read_text(encoding="utf-8")))
    if spec in KNOWN_SHAPES:
        return KNOWN_SHAPES[spec]
    raise ValueError(
        f"model.spec {spec!r}: its config.json is not on this machine and its shape is not in the table "
        f"({', '.join(sorted(KNOWN_SHAPES))}): download the model first, or run with run.memory_check=false "
        "(loading the model is then the only check)"
    )


@dataclass(frozen=True)
class Terms:
    """One phase's predicted peak, term by term (bytes)."""

    phase: str
    terms: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.terms.values())

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "total": self.total, "terms": dict(self.terms)}


def _bytes(dtype: str) -> int:
    return 4 if dtype == "fp32" else 2


def _activation_bytes(dtype: str, device: str) -> int:
    """Bytes per activation and KV value: a CPU's bf16 keeps them in fp32 (ttt/lora.py::keep_lora_sums_fp32)."""
    return 4 if device == "cpu" else _bytes(dtype)


def training_peak(
    shape: ModelShape,
    *,
    tokens: int,
    loss_tokens: int,
    rank: int,
    targets: tuple[str, ...],
    dtype: str,
    grad_checkpointing: bool,
    device: str,
    tiled_logits: bool = False,
) -> Terms:
    """One optimizer step's micro-batch of `tokens` tokens (a packed batch, or the longest single example).
    `tiled_logits`: TRL's fused LM head (behaviour cloning) instead of this project's loss."""
    width = _activation_bytes(dtype, device)
    kept = shape.saved_per_layer(targets)
    per_token = shape.layers * shape.hidden + kept if grad_checkpointing else shape.layers * kept
    return Terms(
        "training",
        {
            "runtime": CUDA_RUNTIME if device == "cuda" else CPU_RUNTIME,
            "autograd": AUTOGRAD,
            "weights": shape.parameters * _bytes(dtype),
            "lora": shape.lora_parameters(rank, targets) * 16,
            "activations": tokens * per_token * width,
            "logits": loss_tokens * min(shape.vocab, TRL_LOGIT_TILE) * 4 * 2
            if tiled_logits
            else int(loss_tokens * shape.vocab * 4 * LOGIT_FACTOR),
        },
    )


def generation_peak(
    shape: ModelShape, *, rows: int, prompt_tokens: int, new_tokens: int, dtype: str, device: str, lora: int = 0
) -> Terms:
    """`rows` sequences decoded together (the generator's batch), `lora` LoRA parameters loaded beside the model."""
    width = _activation_bytes(dtype, device)
    kv = shape.kv_heads * shape.head_dim
    return Terms(
        "generation",
        {
            "runtime": CUDA_RUNTIME if device == "cuda" else CPU_RUNTIME,
            "weights": shape.parameters * _bytes(dtype) + lora * 4,
            "kv_cache": 2 * shape.layers * kv * width * rows * (prompt_tokens + new_tokens),
            "prefill": rows * prompt_tokens * (4 * shape.hidden + 2 * shape.intermediate) * width,
            "logits": rows * shape.vocab * 4 * 2,
        },
    )


def fits(terms: Terms, budget: int) -> bool:
    return terms.total <= budget


def gib(value: int) -> str:
    return f"{value / GIB:.2f} GiB"
