"""The adapter lifecycle: attach LoRA to a base model once, then reset, save and load it in place.

Per-task test-time training trains thousands of adapters on one base model. Reloading the model or re-creating the
PEFT wrapper per adapter costs seconds; resetting the LoRA weights in place costs milliseconds. `reset(seed)` writes
B = 0 and A = a deterministic draw for `seed` (PEFT's own default distribution, drawn from a private generator so
the caller's random state is never touched); the draw is kept as a snapshot so repeated resets are plain copies.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ttt.settings import SEAL_TARGETS, LoraSettings  # noqa: F401  (re-exported)

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


class AdapterError(ValueError):
    """An adapter folder that cannot be loaded into this slot."""


def _module_seed(seed: int, name: str) -> int:
    # Stable across processes and Python hash seeds; one stream per module so the draw ignores module order.
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _atomic_replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished folder into place; an existing folder is replaced, never left half-written."""
    if final.exists():
        old = final.parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)


def _sort_config_lists(path: Path) -> None:
    # PEFT writes target_modules in set order, which changes with PYTHONHASHSEED: sort it for identical files.
    config = json.loads(path.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


# Set on a PEFT model whose LoRA sums are kept in fp32: the autocast dtype its forwards must run under.
_FP32_SUMS_ATTR = "seal_fp32_lora_sums"


def keep_lora_sums_fp32(model: Any, *, any_device: bool = False) -> torch.dtype | None:
    """On a CPU model with bf16 base weights, add each LoRA update to its base layer's output in fp32.

    Why: a bf16 base layer's output has 8 significant bits, and a small LoRA update (a short TTT at SEAL's lr 1e-4)
    is mostly under half an ulp of it, so `bf16(base + delta)` rounds to `base`: after such a TTT the held-out loss
    evaluated in bf16 kept only a third of the fp32 improvement (bench/cpu_precision.py: 7.2 % above fp32). A
    forward hook makes every LoRA-wrapped base layer return fp32, so PEFT sums in fp32, keeps the sum fp32, and the
    residual stream downstream stays fp32; the matmuls stay bf16 under autocast (which then every forward of this
    model needs, generation included: the returned dtype). Measured: within about 1 % of fp32 at 1.4-1.8x its speed.
    (Sharing one bf16 cast of q/k/v's fp32 input through forward pre-hooks, and one autocast context per generate
    call, were both measured slower or no faster: Python hooks cost more than the casts they save.)

    Idempotent; returns None (and changes nothing) unless the base is bf16 on a CPU. GPUs round the same way, but
    that path has not been measured on one, so only `any_device=True` (bench/gpu_check.py) applies it there.
    """
    from peft.tuners.lora import LoraLayer

    if required_autocast(model) is not None:
        return required_autocast(model)
    bases = [module.get_base_layer() for module in model.modules() if isinstance(module, LoraLayer)]
    weights = [getattr(base, "weight", None) for base in bases]
    if not bases or any(w is None or w.dtype != torch.bfloat16 for w in weights):
        return None
    if not any_device and any(w.device.type != "cpu" for w in weights):
        return None
    for base in bases:
        base.register_forward_hook(_output_to_fp32)
    setattr(model, _FP32_SUMS_ATTR, torch.bfloat16)
    return torch.bfloat16


def required_autocast(model: Any) -> torch.dtype | None:
    """The autocast dtype `model`'s forwards must run under (keep_lora_sums_fp32), or None."""
    return getattr(model, _FP32_SUMS_ATTR, None)


def _output_to_fp32(module: Any, args: Any, output: Any) -> Any:
    return output.float() if isinstance(output, torch.Tensor) and output.dtype == torch.bfloat16 else output


class AdapterSlot:
    """One LoRA adapter attached to a base model, reset and reloaded in place.

    `slot.model` is the PEFT model to train and generate with. Only LoRA parameters require gradients; the base
    weights are frozen and never written.
    """

    def __init__(
        self,
        base_model: Any,
        settings: LoraSettings | None = None,
        *,
        seed: int = 0,
        adapter_name: str = "default",
        snapshots_kept: int = 2,
    ) -> None:
        from peft import LoraConfig, get_peft_model

        self.settings = settings or LoraSettings()
        self.adapter_name = adapter_name
        self.init_seed = seed
        self._snapshots_kept = max(1, snapshots_kept)
        self._snapshots: OrderedDict[int, list[torch.Tensor]] = OrderedDict()
        config = LoraConfig(
            r=self.settings.rank,
            lora_alpha=self.settings.alpha,
            lora_dropout=self.settings.dropout,
            target_modules=list(self.settings.targets),
            bias="none",
            task_type="CAUSAL_LM",
        )
        # PEFT draws its own initial A from the global RNG: shield the caller from that, then overwrite it.
        devices = [base_model.device] if getattr(base_model, "device", torch.device("cpu")).type == "cuda" else []
        with torch.random.fork_rng(devices=devices), warnings.catch_warnings():
            # PEFT 0.21 calls a transformers API that transformers 5 deprecates; the warning is not ours to fix.
            warnings.filterwarnings("ignore", category=FutureWarning)
            self.model = get_peft_model(base_model, config, adapter_name=adapter_name)
        self._lora_a: list[tuple[str, torch.nn.Parameter]] = []
        self._lora_b: list[tuple[str, torch.nn.Parameter]] = []
        for name, param in self.model.named_parameters():
            if f".lora_A.{adapter_name}." in name:
                self._lora_a.append((name, param))
            elif f".lora_B.{adapter_name}." in name:
                self._lora_b.append((name, param))
        if not self._lora_a:
            raise AdapterError(f"no LoRA layers were created: none of {self.settings.targets} matched the model")
        keep_lora_sums_fp32(self.model)
        self.source: str | None = None  # the adapter folder last loaded, None after a reset
        self.reset(seed)

    # ---- what is in the slot

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [param for _, param in self._lora_a + self._lora_b]

    def a_parameters(self) -> list[torch.nn.Parameter]:
        """The LoRA A matrices (restored from the seed's snapshot on reset)."""
        return [param for _, param in self._lora_a]

    def b_parameters(self) -> list[torch.nn.Parameter]:
        """The LoRA B matrices (zeroed on reset)."""
        return [param for _, param in self._lora_b]

    def lora_state(self) -> dict[str, torch.Tensor]:
        """A detached copy of the LoRA weights, by parameter name (for tests and checks)."""
        return {name: param.detach().clone() for name, param in self._lora_a + self._lora_b}

    @contextmanager
    def disabled(self) -> Iterator[Any]:
        """Run the base model alone (the adapter is bypassed, not removed)."""
        with self.model.disable_adapter():
            yield self.model

    # ---- reset

    def _initial_a(self, seed: int) -> list[torch.Tensor]:
        """PEFT's default A distribution, kaiming_uniform(a=sqrt(5)) = U(±1/sqrt(fan_in)), drawn for `seed`."""
        tensors = []
        for name, param in self._lora_a:
            generator = torch.Generator(device="cpu").manual_seed(_module_seed(seed, name))
            bound = 1.0 / math.sqrt(param.shape[1])
            draw = torch.empty(param.shape, dtype=torch.float32).uniform_(-bound, bound, generator=generator)
            tensors.append(draw.to(device=param.device, dtype=param.dtype))
        return tensors

    @torch.no_grad()
    def reset(self, seed: int | None = None) -> None:
        """Restore the initial adapter for `seed` (default: the slot's seed) in place: B = 0, A = its seeded draw."""
        seed = self.init_seed if seed is None else seed
        snapshot = self._snapshots.get(seed)
        if snapshot is None:
            snapshot = self._initial_a(seed)
            self._snapshots[seed] = snapshot
            while len(self._snapshots) > self._snapshots_kept:
                self._snapshots.popitem(last=False)
        else:
            self._snapshots.move_to_end(seed)
        a_params = self.a_parameters()
        b_params = self.b_parameters()
        torch._foreach_copy_(a_params, snapshot)
        torch._foreach_zero_(b_params)
        for param in a_params + b_params:
            param.grad = None
        self.source = None

    # ---- save / load

    def _file_key(self, name: str) -> str:
        # PEFT's saved format drops the adapter name: "...q_proj.lora_A.default.weight" -> "...q_proj.lora_A.weight"
        return name.replace(f".lora_A.{self.adapter_name}.", ".lora_A.").replace(
            f".lora_B.{self.adapter_name}.", ".lora_B."
        )

    def save(self, folder: str | Path) -> Path:
        """Write the adapter (PEFT format, safetensors) atomically: the folder appears complete or not at all."""
        final = Path(folder)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            self.model.save_pretrained(tmp, selected_adapters=[self.adapter_name], safe_serialization=True)
            if self.adapter_name != "default":  # PEFT puts non-default adapters in a sub-folder
                nested = tmp / self.adapter_name
                for item in nested.iterdir():
                    os.rename(item, tmp / item.name)
                nested.rmdir()
            _sort_config_lists(tmp / ADAPTER_CONFIG)
            _atomic_replace_dir(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final

    def _check_config(self, folder: Path) -> None:
        config_path = folder / ADAPTER_CONFIG
        try:
            saved = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise AdapterError(f"{config_path}: cannot read the adapter config ({error})") from error
        mine = {"r": self.settings.rank, "lora_alpha": self.settings.alpha}
        for key, expected in mine.items():
            if saved.get(key) != expected:
                raise AdapterError(
                    f"{config_path}: {key} is {saved.get(key)!r} but this slot has {expected!r}; "
                    "load it into a slot with the same LoRA settings"
                )
        saved_targets = saved.get("target_modules") or []
        if sorted(saved_targets) != sorted(self.settings.targets):
            raise AdapterError(
                f"{config_path}: target_modules {sorted(saved_targets)} differ from this slot's "
                f"{sorted(self.settings.targets)}"
            )

    @torch.no_grad()
    def load(self, folder: str | Path) -> None:
        """Copy a saved adapter's weights into the slot in place (no new modules, no new memory for the model)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        weights_path = folder / ADAPTER_WEIGHTS
        if not weights_path.is_file():
            raise AdapterError(f"{weights_path}: no adapter weights (expected a folder written by AdapterSlot.save)")
        self._check_config(folder)
        saved = load_file(str(weights_path))
        expected = {self._file_key(name): param for name, param in self._lora_a + self._lora_b}
        missing = sorted(set(expected) - set(saved))
        unexpected = sorted(set(saved) - set(expected))
        if missing or unexpected:
            raise AdapterError(
                f"{weights_path}: does not match this model's LoRA layers "
                f"(missing {missing[:3]}{'…' if len(missing) > 3 else ''}, "
                f"unexpected {unexpected[:3]}{'…' if len(unexpected) > 3 else ''})"
            )
        for key, param in expected.items():
            tensor = saved[key]
            if tensor.shape != param.shape:
                raise AdapterError(
                    f"{weights_path}: {key} has shape {tuple(tensor.shape)}, expected {tuple(param.shape)}"
                )
            param.copy_(tensor)
            param.grad = None
        self.source = str(folder)
