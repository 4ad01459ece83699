"""Fold an adapter into the base weights in place: W += scale · B·A for every LoRA layer, then a fresh adapter.

Continual self-edits merge each passage's update into the weights before the next passage's update starts. Folding
in place avoids writing a full model per step: a resumed run reloads the base model and folds the recorded adapters
again, in order. The same operations in the same order on the same values give the same weights, bit for bit.
"""

from __future__ import annotations

from typing import Any

import torch


@torch.no_grad()
def fold_adapter(slot: Any) -> int:
    """Add the slot's current LoRA delta to the frozen base weights (computed in fp32), then reset the adapter to
    its initialisation (B = 0: an identity). Returns the number of layers folded."""
    from peft.tuners.lora import LoraLayer

    name = slot.adapter_name
    folded = 0
    for module in slot.model.modules():
        if not isinstance(module, LoraLayer) or name not in module.lora_A:
            continue
        a = module.lora_A[name].weight.float()
        b = module.lora_B[name].weight.float()
        delta = (b @ a) * float(module.scaling[name])
        weight = module.get_base_layer().weight
        if getattr(module, "fan_in_fan_out", False):
            delta = delta.T
        weight.copy_((weight.float() + delta).to(weight.dtype))
        folded += 1
    slot.reset()
    return folded
