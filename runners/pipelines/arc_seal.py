"""SEAL on ARC: the shared outer loop (`seal_loop.py`) with the ARC domain, plus the controls that tell real
test-time learning apart from format learning and output priors, all on the same tasks.

Controls (iteration-0 model, one unit per task):
    it0.base         in-context: the same views and vote with no adapter (always there: the loop needs it)
    ctl.format       in-context with decoding constrained to the grid's alphabet (format-matched: what the model
                     knows once it cannot get the format wrong)
    ctl.oracle       TTT with the fixed recipe of `train` / `ttt_data` (SEAL's oracle recipe by default)
    ctl.wrong_task   the oracle recipe trained on another task's demos (the next task in order), then asked this
                     task's questions: what TTT gives without any information about the task
"""

from __future__ import annotations

from typing import Any

from runners.config import Config, ConfigError
from runners.pipelines import arc_ttt
from runners.pipelines.seal_loop import LoopParts, Processor, WorkerPool, seal_stages, stage_outcome, view_seed
from runners.stage import Outcome, StageSpec, unit_seed
from runners.store import RunStore

CONFIG_SECTIONS = ("model", "lora", "train", "arc", "ttt_data", "infer", "seal", "restem", "controls", "run")
# The iteration count says how far to go, not what the run is: raising it continues a finished run.
CONFIG_EXCLUDE = (  # besides runners.config.OPERATIONAL_KEYS, which no identity includes
    "seal.iterations",
    "seal.evaluate_final",
)

FORMAT, ORACLE, WRONG_TASK = "ctl.format", "ctl.oracle", "ctl.wrong_task"
__all__ = ["CONFIG_EXCLUDE", "CONFIG_SECTIONS", "data_identity", "export_items", "stage_outcome", "stages", "summarize"]


def build_domain(cfg: Config) -> Any:
    from seal.arc.domain import ArcDomain

    return ArcDomain(arc_ttt._tasks(cfg), arc_ttt.recipe_from_config(cfg))


def _check(cfg: Config) -> None:
    if cfg.infer.backend != "hf":
        raise ConfigError(
            "infer.backend: the SEAL loop generates from adapters in memory (hf); vllm is for `seal ttt run` only"
        )
    if cfg.seal.self_edits < 1:
        raise ConfigError(f"seal.self_edits must be >= 1, got {cfg.seal.self_edits}")
    if cfg.seal.iterations < 0:
        raise ConfigError(f"seal.iterations must be >= 0, got {cfg.seal.iterations}")
    if cfg.seal.max_attempts is not None and cfg.seal.max_attempts < cfg.seal.self_edits:
        raise ConfigError(
            f"seal.max_attempts ({cfg.seal.max_attempts}) must be at least seal.self_edits ({cfg.seal.self_edits})"
        )
    if not cfg.seal.temperature > 0:
        raise ConfigError(f"seal.temperature must be > 0 (self-edits are sampled), got {cfg.seal.temperature}")


def stages(cfg: Config, store: RunStore) -> list[StageSpec]:
    """Check everything a worker will need before any work starts: model, tasks, recipe, backend, loop settings."""
    arc_ttt.check_model(cfg)
    try:
        domain = build_domain(cfg)
    except ValueError as exc:
        raise ConfigError(f"arc: {exc}") from None
    _check(cfg)

    def load_worker(model_path: str) -> Any:
        from seal.domain import Worker

        model, tokenizer, slot, generator = arc_ttt.load_worker_model(cfg, model_path)
        return Worker(model, tokenizer, slot, generator, model_path)

    parts = LoopParts(domain, WorkerPool(load_worker))
    return seal_stages(cfg, store, parts, control_stages(cfg, store, parts))


def data_identity(cfg: Config) -> dict[str, str]:
    return arc_ttt.data_identity(cfg)


def control_stages(cfg: Config, store: RunStore, parts: LoopParts) -> list[StageSpec]:
    domain = parts.domain
    groups = domain.groups()

    def make(condition: str) -> Any:
        def make_processor() -> Processor:
            from runners.pipelines.seal_loop import model_location, model_ref

            worker = parts.workers.get(model_location(cfg, store, model_ref(cfg, store, 0)))

            recipe = domain.base_recipe
            if condition == FORMAT:
                from dataclasses import replace

                from ttt.arc.format import ANSWER_END
                from ttt.arc.grid import grid_alphabet

                alphabet = grid_alphabet(cfg.ttt_data.grid_format) + ANSWER_END
                recipe = replace(domain.zero_epoch_recipe(), allowed_chars=alphabet)

            def process(group: str) -> Outcome:
                train_on = None
                if condition == WRONG_TASK:
                    train_on = groups[(groups.index(group) + 1) % len(groups)]
                evaluation = domain.evaluate_recipe(
                    worker,
                    group,
                    recipe,
                    view_seed=view_seed(cfg, group),
                    train_seed=unit_seed(cfg.run.seed, f"{condition}.{group}"),
                    train_on=train_on,
                )
                result = {"reward": evaluation.reward, "evaluation": evaluation.result}
                if train_on is not None:
                    result["trained_on"] = train_on
                return Outcome("ok", result)

            return Processor(process)

        return make_processor

    out = []
    if cfg.controls.format_matched:
        out.append(StageSpec(FORMAT, list(groups), make(FORMAT)))
    if cfg.controls.oracle:
        out.append(StageSpec(ORACLE, list(groups), make(ORACLE)))
    if cfg.controls.wrong_task and len(groups) > 1:
        out.append(StageSpec(WRONG_TASK, list(groups), make(WRONG_TASK)))
    return out


def summarize(cfg: Config, store: RunStore) -> str:
    from runners.seal_report import arc_seal_report

    text = arc_seal_report(cfg, store)
    (store.report_dir() / "arc_seal.md").write_text(text + "\n", encoding="utf-8")
    return text + f"\nreport: {store.report_dir() / 'arc_seal.md'}"


def export_items(cfg: Config, store: RunStore) -> list[dict[str, Any]]:
    """Every evaluation of the run (each iteration's base and self-edits, and the controls) as grading items."""
    domain = build_domain(cfg)
    items: list[dict[str, Any]] = []
    stage_names = sorted(p.name for p in (store.root / "stages").iterdir()) if (store.root / "stages").is_dir() else []
    for stage in stage_names:
        if not stage.endswith((".base", ".inner")) and not stage.startswith("ctl."):
            continue
        for unit, record in sorted(store.records(stage).items()):
            if record.status != "ok" or "evaluation" not in (record.result or {}):
                continue
            group = unit.rsplit(".k", 1)[0] if stage.endswith(".inner") else unit
            provenance = {
                "condition": stage,
                "unit": unit,
                "unit_id": unit,
                "stage": stage,
                "model": cfg.model.spec,
                "config_hash": getattr(record, "config_hash", None),
            }
            # One report row per stage (the in-context baseline, each iteration's base and self-edits, each
            # control), as knowledge bundles are grouped: pooled, they would read as one condition.
            items += [
                {**item, "group": item.get("group") or stage}
                for item in domain.grading_items(group, record.result["evaluation"], provenance)
            ]
    return items
