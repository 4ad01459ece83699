"""In-place adapter reset vs loading the base model and the adapter again from disk (SmolLM2-135M).

    python bench/adapter_reset.py [--ranks auto,128] [--repeats 20] [--reloads 3] [--shape llama-3.2-1b]

reset: AdapterSlot.reset(seed) on an adapter that has just been trained (B = 0, A copied from the seed's snapshot).
reload: what a harness without in-place reset does per task: load the base model from the (cached, safetensors)
folder and the saved adapter with PEFT, until every weight is in memory (`reload_mapped_ms`: until
`from_pretrained` returns, with most of the file still only mapped). Both timed in the same process, one thread,
with the file in the page cache (a cold disk would make the reload slower, never faster). Target: reset <= 1 %.

The headline rank is the one the harness uses on the machine running the bench ("auto": the detected platform
profile's `lora.rank`: 16 on cpu, 32 on t4, 64 on l4, 128 on A100s); SEAL's rank 128 is measured alongside.
floor: one plain copy of the same number of A bytes plus one zero-fill of the B bytes, in flat tensors. The reset
must write every LoRA weight once, so this memory-bandwidth floor bounds it from below; `reset_vs_floor` near 1 shows
that nothing is left to gain in the reset itself. On CPU at rank 128 the SmolLM2 adapter holds 31.7 M parameters, a
quarter of the 135 M base that a warm-cache reload maps in ~0.3 s, so there the ratio is set by memory bandwidth.
`--shape llama-3.2-1b` runs the same measurement on a model with Llama-3.2-1B's exact architecture and random weights
(built once into $SEAL_CACHE/bench/, ~5 GB in fp32; hubs are unreachable here, and timings depend on shapes, not
values), to show how the ratio moves with the size of the base.

Last line: {"bench": "adapter_reset", "model": "smollm2-135m", "reset_ms": …, "reload_ms": …, "ratio": …, …}
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import gc
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ttt.examples import encode_messages
from ttt.lora import AdapterSlot, LoraSettings
from ttt.models import SMOLLM2, load_model, resolve_model
from ttt.train import TrainSettings, train

THREADS = 1


def _touch(model: torch.nn.Module) -> None:
    """Read one value per 4 KiB page of every weight, so that each one is actually in memory."""
    for tensor in model.state_dict().values():
        flat = tensor.reshape(-1)
        flat[:: max(1, 4096 // flat.element_size())].sum()


def _reload(model_path: str, adapter: Path) -> tuple[float, float]:
    """(seconds until the model is loaded and resident, seconds until `from_pretrained` returns).

    safetensors maps the file lazily: `from_pretrained` returns before most weights have been read, and the rest
    of the cost is paid as page faults in the first forward pass. The resident time is the fair cost of a reload
    (on a GPU the load copies every weight to the device anyway); the mapped time is reported beside it."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    started = time.perf_counter()
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter, is_trainable=True)
    mapped = time.perf_counter() - started
    _touch(model)
    resident = time.perf_counter() - started
    del model, base
    gc.collect()
    return resident, mapped


def _profile_rank() -> tuple[str, int]:
    from runners.config import load_config
    from runners.platform import choose_profile, detect_platform

    profile = choose_profile(detect_platform())
    return profile, load_config("arc_ttt_oracle", profile).lora.rank


def _floor_ms(a_params: list[torch.Tensor], b_params: list[torch.Tensor], repeats: int) -> float:
    """Memory-bandwidth floor: copy as many bytes as A holds and zero as many as B holds, in two flat tensors."""
    a_flat = torch.empty(sum(p.numel() for p in a_params), dtype=a_params[0].dtype, device=a_params[0].device)
    source = torch.randn_like(a_flat)
    b_flat = torch.empty(sum(p.numel() for p in b_params), dtype=b_params[0].dtype, device=b_params[0].device)
    times = []
    for _ in range(repeats):
        source.add_(1e-3)  # keep the source out of any "already equal" shortcut and evict nothing
        started = time.perf_counter()
        a_flat.copy_(source)
        b_flat.zero_()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


# Llama-3.2-1B's config.json (architecture only; the weights are random).
_SHAPES = {
    "llama-3.2-1b": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "rope_theta": 500000.0,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True,
    }
}


def _shaped_model(shape: str) -> str:
    """A random-weight model with a published architecture and SmolLM2's tokenizer, built once into the cache."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from ttt.models import default_cache_dir

    folder = default_cache_dir() / "bench" / f"{shape}-random"
    if not (folder / "config.json").exists():
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**_SHAPES[shape]))
        model.save_pretrained(folder, safe_serialization=True)
        AutoTokenizer.from_pretrained(resolve_model(SMOLLM2)).save_pretrained(folder)
        del model
        gc.collect()
    return str(folder)


def measure(model_spec: str, rank: int, repeats: int, reloads: int) -> dict:
    model_path = resolve_model(model_spec)  # converts once into the cache; not timed
    model, tokenizer = load_model(model_spec)
    settings = LoraSettings(rank=rank)
    slot = AdapterSlot(model, settings)

    # A real (short) training run, so the reset undoes real updates.
    messages = [
        {"role": "user", "content": "[[1, 2], [3, 4]] -> [[4, 3], [2, 1]]#\n[[5, 6]] -> "},
        {"role": "assistant", "content": "[[6, 5]]#"},
    ]
    train(slot, [encode_messages(tokenizer, messages)] * 2, TrainSettings(epochs=1, batch_size=1, warmup_steps=0))

    with tempfile.TemporaryDirectory(prefix="seal-bench-reset-") as tmp:
        adapter = slot.save(Path(tmp) / "adapter")

        started = time.perf_counter()
        slot.reset(1)  # a seed never seen: draws A (then keeps it as a snapshot)
        new_seed_ms = (time.perf_counter() - started) * 1000
        reset_times = []
        for _ in range(repeats):
            with torch.no_grad():  # dirty the adapter as training would, outside the timed region
                for param in slot.trainable_parameters():
                    param.add_(1e-3)
            started = time.perf_counter()
            slot.reset(0)
            reset_times.append(time.perf_counter() - started)
        load_times = []
        for _ in range(max(3, repeats // 4)):
            started = time.perf_counter()
            slot.load(adapter)
            load_times.append(time.perf_counter() - started)
        reloads_measured = [_reload(model_path, adapter) for _ in range(reloads)]
        reload_times = [resident for resident, _ in reloads_measured]
        mapped_times = [mapped for _, mapped in reloads_measured]

    floor_ms = _floor_ms(slot.a_parameters(), slot.b_parameters(), repeats)
    reset_ms = statistics.median(reset_times) * 1000
    reload_ms = statistics.median(reload_times) * 1000
    result = {
        "reset_ms": round(reset_ms, 3),
        "reload_ms": round(reload_ms, 1),
        "reload_mapped_ms": round(statistics.median(mapped_times) * 1000, 1),
        "ratio_vs_mapped": round(reset_ms / (statistics.median(mapped_times) * 1000), 5),
        "ratio": round(reset_ms / reload_ms, 5),
        "rank": rank,
        "floor_ms": round(floor_ms, 3),
        "reset_vs_floor": round(reset_ms / floor_ms, 3),
        "alpha": settings.alpha,
        "targets": list(settings.targets),
        "lora_params": sum(p.numel() for p in slot.trainable_parameters()),
        "reset_new_seed_ms": round(new_seed_ms, 1),
        "load_adapter_in_place_ms": round(statistics.median(load_times) * 1000, 2),
    }
    del slot, model
    gc.collect()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--ranks", default="auto,128", help="LoRA ranks; the first is the headline ('auto': the platform profile's)"
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--reloads", type=int, default=3)
    parser.add_argument("--shape", choices=sorted(_SHAPES), help="a random-weight model of this architecture")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)

    profile, profile_rank = _profile_rank()
    ranks = [profile_rank if rank == "auto" else int(rank) for rank in args.ranks.split(",")]
    ranks = list(dict.fromkeys(ranks))  # on an A100 "auto" is 128 already
    model_spec = _shaped_model(args.shape) if args.shape else SMOLLM2
    results = [measure(model_spec, rank, args.repeats, args.reloads) for rank in ranks]
    print(
        json.dumps(
            {
                "bench": "adapter_reset",
                "model": f"{args.shape} (random weights)" if args.shape else SMOLLM2,
                **results[0],
                "profile": profile,
                "target_ratio_max": 0.01,
                "other_ranks": results[1:],
                "repeats": args.repeats,
                "reloads": args.reloads,
                "threads": THREADS,
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
