"""Pipelines: each module turns a validated Config into a list of stages and, at the end, a summary."""

from __future__ import annotations

import importlib
from types import ModuleType

PIPELINES = {
    "selftest": "runners.pipelines.selftest",
    "arc_ttt": "runners.pipelines.arc_ttt",
    "arc_seal": "runners.pipelines.arc_seal",
    "knowledge_seal": "runners.pipelines.knowledge_seal",
    "knowledge_cpt": "runners.pipelines.knowledge_cpt",
    "knowledge_continual": "runners.pipelines.knowledge_continual",
}


def get_pipeline(name: str) -> ModuleType:
    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline '{name}' (config key 'pipeline'); available: {', '.join(PIPELINES)}")
    return importlib.import_module(PIPELINES[name])
