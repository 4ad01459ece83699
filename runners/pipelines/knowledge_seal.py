"""SEAL on knowledge incorporation: the shared outer loop (`seal_loop.py`) with the knowledge domain, plus the
controls that tell what the self-edits add apart from seeing the passage again.

Stages: RL iteration i (`it{i}.sample/base/inner[/export/reward]/select/sft/merge`) on its training passages;
then iteration 0's model (`eval0.*`) and the final model (`eval{N}.*`) on the held-out evaluation passages
(`knowledge.eval_passages`; null: the final model as `it{N}.*` on iteration 0's passages), and the controls on the
same passages with iteration 0's model:

    ctl.passage    the passage alone as training data (SEAL's "train on passage only")
    ctl.repeat     the passage repeated as many times as the base model's self-edits have sequences (the same
                   number of optimizer steps as passage + implications, without their content)
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from runners.config import Config, ConfigError
from runners.pipelines import arc_ttt
from runners.pipelines.seal_loop import LoopParts, Processor, WorkerPool, model_location, model_ref, seal_stages
from runners.pipelines.seal_loop import stage_outcome as loop_stage_outcome
from runners.stage import Outcome, StageSpec, unit_seed
from runners.store import RunStore

CONFIG_SECTIONS = ("model", "train", "knowledge", "judge", "seal", "restem", "run")
# What does not change a result: how far the loop goes, where caches live, and the ARC-only keys of `train`
# (the knowledge inner loop takes its optimizer settings from knowledge.train, and only dtype, checkpointing,
# length and packing from `train`).
CONFIG_EXCLUDE = (  # besides runners.config.OPERATIONAL_KEYS, which no identity includes
    "seal.iterations",
    "seal.evaluate_final",
    "judge.host",
    "judge.concurrency",
    "judge.timeout_s",
    "judge.retries",
    *(
        f"train.{key}"
        for key in (
            "learning_rate",
            "epochs",
            "batch_size",
            "grad_accum",
            "warmup_steps",
            "schedule",
            "max_steps_cap",
            "loss",
            "max_grad_norm",
        )
    ),
)

log = logging.getLogger(__name__)

PASSAGE, REPEAT = "ctl.passage", "ctl.repeat"
REPO_ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------


def source_path(source: str) -> Path:
    """A relative source is looked up in the working directory, then beside the code (the bundled data/)."""
    path = Path(source).expanduser()
    if path.is_absolute() or path.exists():
        return path
    bundled = REPO_ROOT / source
    return bundled if bundled.exists() else path


def _stamp(source: str) -> tuple[str, int, int] | None:
    if source.startswith("hub:"):
        return None
    path = source_path(source)
    file = path / "passages.json" if path.is_dir() else path
    if not file.exists():
        return None
    st = file.stat()
    return str(file), st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=4)
def _load_all(source: str, stamp: Any) -> list[Any]:
    from seal.knowledge.data import load_passages, load_squad_hub

    if source.startswith("hub:"):
        name, _, split = source[len("hub:") :].partition(":")
        return load_squad_hub(split or "validation", name or "rajpurkar/squad")
    path = source_path(source)
    if not path.exists():
        raise ConfigError(
            f"knowledge.source: {source} does not exist (give a JSON file in SEAL's SQuAD layout, a folder holding "
            "passages.json, or hub:rajpurkar/squad:validation)"
        )
    return load_passages(path)


def _shuffled(cfg: Config) -> list[Any]:
    from seal.knowledge.data import KnowledgeDataError, seal_subset

    try:
        passages = _load_all(cfg.knowledge.source, _stamp(cfg.knowledge.source))
    except KnowledgeDataError as exc:
        raise ConfigError(f"knowledge.source: {exc}") from None
    if cfg.knowledge.shuffle_seed is None:
        return list(passages)
    return seal_subset(passages, 0, len(passages), seed=cfg.knowledge.shuffle_seed)


def _slice(cfg: Config, key: str, bounds: tuple[int, ...], shift: int = 0) -> tuple[int, int]:
    if len(bounds) != 2 or not 0 <= bounds[0] < bounds[1]:
        raise ConfigError(f"knowledge.{key}: expected [start, end) with 0 <= start < end, got {list(bounds)}")
    return bounds[0] + shift, bounds[1] + shift


def train_slice(cfg: Config, i: int) -> tuple[int, int]:
    start, end = cfg.knowledge.train_passages[0], cfg.knowledge.train_passages[-1]
    shift = i * (end - start) if cfg.knowledge.new_train_each_iteration else 0
    return _slice(cfg, "train_passages", cfg.knowledge.train_passages, shift)


def passage_sets(cfg: Config) -> tuple[dict[int, list[Any]], list[Any] | None]:
    """Training passages per RL iteration and the evaluation passages (None: no held-out set), checked to fit."""
    shuffled = _shuffled(cfg)

    def take(key: str, bounds: tuple[int, int]) -> list[Any]:
        if bounds[1] > len(shuffled):
            raise ConfigError(
                f"knowledge.{key}: passages [{bounds[0]}, {bounds[1]}) asked for, but {cfg.knowledge.source} has "
                f"{len(shuffled)}"
            )
        return shuffled[bounds[0] : bounds[1]]

    train = {i: take("train_passages", train_slice(cfg, i)) for i in range(max(1, cfg.seal.iterations))}
    held_out = None
    if cfg.knowledge.eval_passages is not None:
        bounds = _slice(cfg, "eval_passages", cfg.knowledge.eval_passages)
        held_out = take("eval_passages", bounds)
        overlap = {p.id for p in held_out} & {p.id for ps in train.values() for p in ps}
        if overlap:
            raise ConfigError(
                f"knowledge.eval_passages overlaps knowledge.train_passages ({len(overlap)} passages, e.g. "
                f"{sorted(overlap)[0]}): evaluation passages must be held out"
            )
    return train, held_out


def data_identity(cfg: Config) -> dict[str, str]:
    """`knowledge/<passage>` → sha256 of its title, context and questions: an edited data file is noticed."""
    train, held_out = passage_sets(cfg)
    out = {}
    for p in [*(p for ps in train.values() for p in ps), *(held_out or [])]:
        out[f"knowledge/{p.id}"] = hashlib.sha256(json.dumps(p.to_dict(), sort_keys=True).encode()).hexdigest()
    return out


# ---------------------------------------------------------------------------------------------------------------
# Domain, judge, recipe
# ---------------------------------------------------------------------------------------------------------------


def resolve_style(cfg: Config) -> str:
    """knowledge.style auto: chat prompts when the model's tokenizer has a chat template, else completion style."""
    if cfg.knowledge.style != "auto":
        return cfg.knowledge.style
    from ttt.models import load_tokenizer, resolve_model

    tokenizer = load_tokenizer(resolve_model(cfg.model.spec, cfg.model.cache_dir))
    return "chat" if getattr(tokenizer, "chat_template", None) else "completion"


def correctness(cfg: Config) -> str:
    if cfg.knowledge.correct == "auto":
        return "judge" if cfg.judge.spec else "contains"
    return cfg.knowledge.correct


def passage_recipe(cfg: Config, style: str, lora_train: Any = None) -> Any:
    from ttt.settings import TrainSettings
    from ttt.text_ttt import PassageRecipe

    t = lora_train or cfg.knowledge.train
    try:
        train = TrainSettings(
            lr=t.learning_rate,
            epochs=t.epochs,
            batch_size=t.batch_size,
            grad_accum=t.grad_accum,
            warmup_steps=t.warmup_steps,
            lr_schedule=t.schedule,
            max_steps_cap=None,  # SEAL's knowledge loop has none of ARC's step cap
            max_grad_norm=t.max_grad_norm,
            grad_checkpointing=cfg.train.grad_checkpointing,
            dtype=cfg.train.dtype,
            max_len=cfg.train.max_len,
            packing=cfg.train.packing,
        )
    except ValueError as exc:
        raise ConfigError(f"knowledge.train: {exc}") from None
    # A base model keeps writing after its answer: completion-style answers end at the line's end.
    stop = ("\n",) if style == "completion" else ()
    return PassageRecipe(
        train=train, loss_start=cfg.knowledge.loss_start, max_new_tokens=cfg.knowledge.answer_max_new_tokens, stop=stop
    )


class JudgeFailed(RuntimeError):
    """The in-loop judge could not score an answer: the unit that asked is recorded `error` (retried)."""


def make_judge(cfg: Config, store: RunStore) -> Any:
    """The in-loop judge: grading items → verdicts, through the grading package's cache in the run directory
    (shared by every worker of the run; one worker never wipes another's rows)."""
    from grading.inloop import judge_items_sync

    spec = cfg.judge
    cache = store.root / "grading" / "judge-cache.sqlite"

    def judge(items: list[dict[str, Any]]) -> dict[str, str | None]:
        from grading.judges import JudgeError

        try:
            verdicts = judge_items_sync(
                items,
                [spec.spec],
                cache,
                rubric=spec.rubric,
                host=spec.host,
                concurrency=spec.concurrency,
                timeout=spec.timeout_s,
                retries=spec.retries,
            )
        except JudgeError as exc:
            raise JudgeFailed(f"judge {spec.spec} failed: {str(exc).splitlines()[0]}") from None
        failed = [
            v
            for v in verdicts.values()
            if v.verdict is None and any(o.get("status") == "failed" for o in v.votes.values())
        ]
        if failed:
            # A request that failed (judge down, erroring, timing out): an infrastructure failure, never a wrong
            # answer and never a finished reward. The unit becomes `error` and is retried on the next run.
            why = (failed[0].reason or "no reason given").splitlines()[0][:300]
            raise JudgeFailed(
                f"judge {spec.spec} failed: {len(failed)} of {len(verdicts)} answers unscored ({why}); run again "
                "once the judge answers"
            )
        # A reply the judge gave but that is no verdict (unparseable, truncated, a split panel) is data: cached as
        # given, so asking again returns it again; the answer stays unscored, counted, and its reward is None.
        return {item_id: v.verdict for item_id, v in verdicts.items()}

    return judge


def build_domain(cfg: Config, store: RunStore | None, style: str | None = None) -> Any:
    """The domain over every passage the loop uses, with the training passages per iteration and the held-out ones."""
    train, held_out = passage_sets(cfg)
    passages: dict[str, Any] = {}
    for p in [*(p for ps in train.values() for p in ps), *(held_out or [])]:
        passages.setdefault(p.id, p)
    return make_domain(cfg, store, list(passages.values()), style), train, held_out


def make_domain(cfg: Config, store: RunStore | None, passages: list[Any], style: str | None = None) -> Any:
    """A knowledge domain over `passages` with the config's prompt, inner loop, correctness and reward. `store`:
    where the in-loop judge keeps its cache (None: no judge is built, e.g. for exporting)."""
    from seal.knowledge.domain import KnowledgeDomain, KnowledgeSettings

    style = style or resolve_style(cfg)
    correct = correctness(cfg)
    deferred = cfg.judge.spec == "deferred" and correct == "judge"  # a metric chosen by name needs no verdicts
    if correct == "judge" and not cfg.judge.spec:
        raise ConfigError("knowledge.correct: judge needs judge.spec (an ollama:<model> judge, or deferred)")
    if cfg.judge.spec not in (None, "deferred"):
        from grading.judges import parse_judge_spec

        try:
            parse_judge_spec(cfg.judge.spec)
        except ValueError as exc:
            raise ConfigError(f"judge.spec: {exc} (or deferred, to grade later on another machine)") from None
    try:
        settings = KnowledgeSettings(
            variant=cfg.knowledge.prompt,
            style=style,
            include_passage=cfg.knowledge.include_passage,
            split_newlines=cfg.knowledge.split_newlines,
            rounds=cfg.knowledge.rounds,
            correct=correct,
            reward=cfg.knowledge.reward,
            deferred=deferred,
        )
    except ValueError as exc:
        raise ConfigError(f"knowledge: {exc}") from None
    judge = make_judge(cfg, store) if correct == "judge" and not deferred and store is not None else None
    if correct == "judge" and not deferred and store is None:
        correct_settings = KnowledgeSettings(**{**settings.__dict__, "deferred": True})
        return KnowledgeDomain(passages, correct_settings, passage_recipe(cfg, style), None)
    return KnowledgeDomain(passages, settings, passage_recipe(cfg, style), judge)


def _check(cfg: Config) -> None:
    arc_ttt.check_model(cfg)
    if cfg.infer.backend != "hf":
        raise ConfigError("infer.backend: the SEAL loop generates from adapters in memory (hf)")
    if cfg.seal.decoding != "free":
        raise ConfigError("seal.decoding: the knowledge domain samples free text (template decoding is ARC's)")
    if cfg.seal.self_edits < 1 or cfg.seal.iterations < 0:
        raise ConfigError("seal.self_edits must be >= 1 and seal.iterations >= 0")
    if cfg.seal.max_attempts is not None and cfg.seal.max_attempts < cfg.seal.self_edits:
        raise ConfigError(f"seal.max_attempts ({cfg.seal.max_attempts}) must be >= seal.self_edits")
    if not cfg.seal.temperature > 0:
        raise ConfigError(f"seal.temperature must be > 0 (self-edits are sampled), got {cfg.seal.temperature}")


# ---------------------------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------------------------


def stages(cfg: Config, store: RunStore) -> list[StageSpec]:
    _check(cfg)
    if cfg.judge.spec == "deferred" and correctness(cfg) != "judge":
        # The platform profiles set judge.spec deferred for every experiment; a metric chosen by name needs none.
        log.warning(
            "judge.spec deferred is not used: knowledge.correct is %s (a metric, no verdicts to grade); set "
            "knowledge.correct=judge (or auto) to export the answers for grading",
            cfg.knowledge.correct,
        )
    domain, _, held_out = build_domain(cfg, store)

    def load_worker(model_path: str) -> Any:
        from seal.domain import Worker

        model, tokenizer, slot, generator = arc_ttt.load_worker_model(cfg, model_path, lora=cfg.knowledge.lora)
        return Worker(model, tokenizer, slot, generator, model_path)

    parts = LoopParts(
        domain,
        WorkerPool(load_worker),
        train_groups=lambda i: _train_ids(cfg, i),
        eval_groups=[p.id for p in held_out] if held_out is not None else None,
    )
    return seal_stages(cfg, store, parts, control_stages(cfg, store, parts))


def preflight(cfg: Config, store: RunStore, specs: list[StageSpec]) -> str | None:
    """One line when the in-loop judge does not answer and a stage that asks it still has units to do (checked
    before the run starts, as `seal grade` does); None otherwise."""
    if correctness(cfg) != "judge" or cfg.judge.spec in (None, "deferred"):
        return None
    judged = [s for s in specs if s.name.endswith((".base", ".inner")) or s.name.startswith("ctl.")]
    if not any(not isinstance(s.units, list) or set(s.units) - store.journal(s.name).done_units() for s in judged):
        return None
    from grading.inloop import check_judges_sync
    from grading.judges import JudgeError

    try:
        check_judges_sync(
            [cfg.judge.spec],
            host=cfg.judge.host,
            timeout=cfg.judge.timeout_s,
            retries=min(cfg.judge.retries, 3),
            rubric=cfg.judge.rubric,
        )
    except JudgeError as exc:
        return (
            f"judge.spec {cfg.judge.spec} does not answer: {str(exc).splitlines()[0]} (start it, or set judge.host; "
            "or judge.spec=deferred to grade elsewhere), then run again"
        )
    return None


def _train_ids(cfg: Config, i: int) -> list[str]:
    shuffled = _shuffled(cfg)
    start, end = train_slice(cfg, i)
    if end > len(shuffled):
        raise ConfigError(
            f"knowledge.train_passages: iteration {i} needs passages [{start}, {end}), only {len(shuffled)}"
        )
    return [p.id for p in shuffled[start:end]]


def control_stages(cfg: Config, store: RunStore, parts: LoopParts) -> list[StageSpec]:
    from seal.knowledge.domain import passage_sequence

    domain = parts.domain
    held_out = parts.eval_groups is not None
    groups = list(parts.eval_groups) if held_out else parts.groups_of_iteration(0)  # type: ignore[arg-type]
    sample = "eval0.sample" if held_out else "it0.sample"
    base = "eval0.base" if held_out else "it0.base"

    def make(condition: str) -> Any:
        def make_processor() -> Processor:
            worker = parts.workers.get(model_location(cfg, store, model_ref(cfg, store, 0)))
            samples = store.records(sample) if condition == REPEAT else {}
            bases = store.records(base)

            def process(group: str) -> Outcome:
                passage = domain.passages[group]
                copies = 1
                if condition == REPEAT:
                    copies = repeat_count(samples[group].result, domain, group)
                sequences = [passage_sequence(passage)] * copies
                evaluation = domain.evaluate_sequences(
                    worker,
                    group,
                    sequences,
                    train_seed=unit_seed(cfg.run.seed, f"{condition}.{group}"),
                    base=bases[group].result.get("evaluation") if group in bases else None,
                )
                return Outcome("ok", {"reward": evaluation.reward, "copies": copies, "evaluation": evaluation.result})

            return Processor(process)

        return make_processor

    out = []
    if cfg.knowledge.passage_only:
        out.append(StageSpec(PASSAGE, groups, make(PASSAGE), needs=(base,)))
    if cfg.knowledge.passage_repeated:
        out.append(StageSpec(REPEAT, groups, make(REPEAT), needs=(sample, base), needs_per_group=True))
    return out


def repeat_count(sampled: dict[str, Any], domain: Any, group: str) -> int:
    """How many sequences the base model's usable self-edits of `group` give on average (at least 1)."""
    counts = []
    for index in sampled["slots"]:
        attempt = sampled["attempts"][index]
        if attempt["accepted"]:
            counts.append(len(domain.sequences(group, domain.parse(attempt["text"]))))
    return max(1, round(sum(counts) / len(counts))) if counts else 1


# ---------------------------------------------------------------------------------------------------------------
# Outcomes, report, export
# ---------------------------------------------------------------------------------------------------------------


def stage_outcome(cfg: Config, store: RunStore, stage: str) -> str | None:
    step = stage.split(".", 1)[-1]
    records = store.records(stage)
    if step in ("base", "inner", "passage", "repeat", "reward") and records:
        scores = [
            (r.result or {}).get("evaluation", {}).get("scores") or (r.result or {}).get("scores")
            for r in records.values()
            if r.status == "ok"
        ]
        scores = [s for s in scores if s]
        rewards = [(r.result or {}).get("reward") for r in records.values() if r.status == "ok"]
        scored = [x for x in rewards if x is not None]
        # Unscored answers (the judge's verdicts missing) and the units holding them: not units alone.
        holding = [_unscored_answers(r.result or {}) for r in records.values() if r.status == "ok"]
        unscored_answers, unscored = sum(holding), sum(1 for n in holding if n)

        def mean(key: str) -> str:
            values = [s[key] for s in scores if s.get(key) is not None]
            return f"{sum(values) / len(values):.3f}" if values else "–"

        parts = [f"{len(records)} units", f"contains {mean('contains')}", f"F1 {mean('f1')}", f"gold NLL {mean('nll')}"]
        if step == "base":
            scored, unscored = [], 0  # the unadapted model earns no reward: it is what rewards are relative to
        if scored:
            parts.append(f"mean reward {sum(scored) / len(scored):.3f}")
        if unscored:
            what = "self-edits" if step in ("inner", "reward") else "passages"
            parts.append(f"{unscored_answers} answers of {unscored} {what} unscored")
        invalid = sum(1 for r in records.values() if r.status == "invalid")
        if invalid:
            parts.append(f"{invalid} unusable")
        return "; ".join(parts)
    if step == "export" and records:
        r = next(iter(records.values())).result or {}
        return f"{r.get('items')} answers exported for grading: {r.get('bundle')}"
    return loop_stage_outcome(cfg, store, stage)


def _unscored_answers(result: dict[str, Any]) -> int:
    """How many of a record's answers have no verdict: its own count, or its scores' (inner, controls)."""
    if "unscored" in result:
        return int(result["unscored"] or 0)
    scores = result.get("evaluation", {}).get("scores") or result.get("scores") or {}
    return int(scores.get("unscored") or 0)


def summarize(cfg: Config, store: RunStore) -> str:
    from runners.knowledge_report import knowledge_report

    text = knowledge_report(cfg, store)
    (store.report_dir() / "knowledge_seal.md").write_text(text + "\n", encoding="utf-8")
    return text + f"\nreport: {store.report_dir() / 'knowledge_seal.md'}"


def export_items(cfg: Config, store: RunStore) -> list[dict[str, Any]]:
    """Every answer of the run (each evaluation's base, self-edits and controls) as grading items."""
    domain, _, _ = build_domain(cfg, None)
    items: list[dict[str, Any]] = []
    folder = store.root / "stages"
    names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    for stage in names:
        if not stage.endswith((".base", ".inner")) and not stage.startswith("ctl."):
            continue
        for unit, record in sorted(store.records(stage).items()):
            result = record.result or {}
            if record.status != "ok" or "evaluation" not in result or result.get("zero_epochs"):
                continue
            group = unit.rsplit(".k", 1)[0] if stage.endswith(".inner") else unit
            provenance = {
                "prefix": f"{stage}/{unit}",
                "stage": stage,
                "unit_id": unit,
                "model": cfg.model.spec,
                "config_hash": record.config_hash,
            }
            items += domain.grading_items(group, result["evaluation"], provenance)
    return items
