"""Continued pretraining on many passages (seal-reference §B7): every passage's self-edit sequences in ONE update.

    cpt.sample   per passage: `cpt.self_edits` completions from the model (the loop's own sample stage)
    cpt.base     per passage: the unadapted model's answers and gold NLL (the loop's own base stage)
    cpt.train    one unit: one LoRA on the sequences of all N passages (rank 32, alpha 64, 3 epochs, lr 1e-3,
                 batch 4, accumulation 2 by default); the adapter is the unit's artifact
    cpt.answer   per passage: the questions answered with that adapter

Each phase is resumable on its own: a kill during `cpt.answer` keeps the adapter and every recorded passage.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from runners.config import Config, ConfigError
from runners.pipelines import arc_ttt
from runners.pipelines.knowledge_seal import _shuffled, make_domain, passage_recipe
from runners.pipelines.seal_loop import LoopParts, Processor, WorkerPool, baseliner, model_location, sampler
from runners.stage import Outcome, StageSpec, unit_seed
from runners.store import RunStore

SAMPLE, BASE, TRAIN, ANSWER = "cpt.sample", "cpt.base", "cpt.train", "cpt.answer"
TRAIN_UNIT = "update"
CONFIG_SECTIONS = ("model", "train", "knowledge", "judge", "seal", "cpt", "run")
CONFIG_EXCLUDE = (  # besides runners.config.OPERATIONAL_KEYS, which no identity includes
    "judge.host",
    "judge.concurrency",
    "judge.timeout_s",
    "judge.retries",
    "seal.iterations",
    "seal.evaluate_final",
    "seal.self_edits",
    "seal.select",
    "seal.threshold",
    "knowledge.train_passages",
    "knowledge.eval_passages",
    "knowledge.new_train_each_iteration",
    "knowledge.rounds",
    "knowledge.reward",
    "knowledge.lora",
    "knowledge.train",
    "knowledge.passage_only",
    "knowledge.passage_repeated",
)


def passages_of(cfg: Config) -> list[Any]:
    bounds = cfg.cpt.passages
    shuffled = _shuffled(cfg)
    if len(bounds) != 2 or not 0 <= bounds[0] < bounds[1]:
        raise ConfigError(f"cpt.passages: expected [start, end) with 0 <= start < end, got {list(bounds)}")
    if bounds[1] > len(shuffled):
        raise ConfigError(
            f"cpt.passages: [{bounds[0]}, {bounds[1]}) asked for; {cfg.knowledge.source} has {len(shuffled)}"
        )
    return shuffled[bounds[0] : bounds[1]]


def data_identity(cfg: Config) -> dict[str, str]:
    return {
        f"knowledge/{p.id}": hashlib.sha256(json.dumps(p.to_dict(), sort_keys=True).encode()).hexdigest()
        for p in passages_of(cfg)
    }


def stages(cfg: Config, store: RunStore) -> list[StageSpec]:
    arc_ttt.check_model(cfg)
    if cfg.seal.decoding != "free":
        raise ConfigError("seal.decoding: the knowledge domain samples free text")
    if cfg.cpt.self_edits < 1:
        raise ConfigError(f"cpt.self_edits must be >= 1, got {cfg.cpt.self_edits}")
    passages = passages_of(cfg)
    domain = make_domain(cfg, store, passages)
    groups = [p.id for p in passages]

    def load_worker(model_path: str) -> Any:
        from seal.domain import Worker

        model, tokenizer, slot, generator = arc_ttt.load_worker_model(cfg, model_path, lora=cfg.cpt.lora)
        return Worker(model, tokenizer, slot, generator, model_path)

    parts = LoopParts(domain, WorkerPool(load_worker), train_groups=lambda _: groups)
    model_path = model_location(cfg, store, {"spec": cfg.model.spec})

    def make_train() -> Processor:
        def process(_: str) -> Outcome:
            from ttt.examples import encode_text
            from ttt.train import train

            worker = parts.workers.get(model_path)
            samples = store.records(SAMPLE)
            sequences: list[str] = []
            usable = 0
            for group in groups:
                sampled = samples[group].result
                for index in sampled["slots"]:
                    attempt = sampled["attempts"][index]
                    if attempt["accepted"]:
                        usable += 1
                        edit = domain.parse(attempt["text"])
                        sequences += domain.sequences(group, edit)  # SEAL: each completion with the passage
                if not any(sampled["attempts"][i]["accepted"] for i in sampled["slots"]):
                    from seal.knowledge.domain import passage_sequence

                    sequences.append(passage_sequence(domain.passages[group]))  # nothing usable: the passage alone
            recipe = passage_recipe(cfg, domain.settings.style, cfg.cpt.train)
            loss_start = recipe.loss_start if recipe.loss_start is not None else 0
            examples = [encode_text(worker.tokenizer, text, loss_start=loss_start) for text in sequences]
            worker.slot.reset()
            from dataclasses import replace

            trained = train(worker.slot, examples, replace(recipe.train, seed=unit_seed(cfg.run.seed, TRAIN)))
            relative = f"artifacts/{TRAIN}/{TRAIN_UNIT}/adapter"
            with store.write_artifact(TRAIN, TRAIN_UNIT) as folder:
                worker.slot.save(folder / "adapter")
            result = {
                "passages": len(groups),
                "self_edits_used": usable,
                "sequences": len(examples),
                "steps": trained.steps,
                "tokens": trained.tokens,
                "loss_first": trained.losses[0] if trained.losses else None,
                "loss_last": trained.losses[-1] if trained.losses else None,
                "seconds": trained.seconds,
                "peak_memory_bytes": trained.peak_memory_bytes,
                "precision": trained.precision,
            }
            return Outcome("ok", result, artifacts={"adapter": relative})

        return Processor(process)

    def make_answer() -> Processor:
        from ttt.generate.base import ACTIVE_ADAPTER
        from ttt.text_ttt import answer_and_score

        worker = parts.workers.get(model_path)
        trained = store.records(TRAIN)[TRAIN_UNIT]
        worker.slot.load(store.artifact(trained.artifacts["adapter"]))
        bases = store.records(BASE)
        recipe = domain.recipe

        def process(group: str) -> Outcome:
            answers, nll = answer_and_score(
                worker.slot,
                worker.tokenizer,
                worker.generator,
                domain.questions(group),
                adapter=ACTIVE_ADAPTER,
                max_new_tokens=recipe.max_new_tokens,
                stop=recipe.stop,
            )
            record = domain._round(group, answers, nll)
            evaluation = domain._finish({"rounds": [record]}, bases[group].result.get("evaluation"))
            return Outcome("ok", {"reward": evaluation.reward, "evaluation": evaluation.result})

        return Processor(process)

    return [
        StageSpec(SAMPLE, groups, sampler(cfg, store, parts, 0, SAMPLE, cfg.cpt.self_edits)),
        StageSpec(BASE, groups, baseliner(cfg, store, parts, 0, None)),
        StageSpec(TRAIN, [TRAIN_UNIT], make_train, needs=(SAMPLE,), single=True),
        StageSpec(ANSWER, groups, make_answer, needs=(TRAIN, BASE)),
    ]


def export_items(cfg: Config, store: RunStore) -> list[dict[str, Any]]:
    """The unadapted and the CPT answers as grading items (`seal export`)."""
    domain = make_domain(cfg, None, passages_of(cfg))
    items: list[dict[str, Any]] = []
    for stage in (BASE, ANSWER):
        for unit, record in sorted(store.records(stage).items()):
            if record.status == "ok":
                provenance = {"prefix": f"{stage}/{unit}", "stage": stage, "unit_id": unit, "model": cfg.model.spec}
                items += domain.grading_items(unit, record.result["evaluation"], provenance)
    return items


def summarize(cfg: Config, store: RunStore) -> str:
    from runners.knowledge_report import KCondition, _add, summary_rows

    conditions = []
    for stage, label in ((BASE, "base model, no adaptation"), (ANSWER, "CPT: one update on every passage")):
        cond = KCondition(label, stage)
        for unit, record in sorted(store.records(stage).items()):
            cond.units += 1
            if record.status == "ok":
                _add(cond, unit, record.result["evaluation"])
        conditions.append(cond)
    rows = summary_rows(conditions)
    lines = [
        f"# Continued pretraining: {cfg.experiment} ({cfg.model.spec}), {len(passages_of(cfg))} passages",
        "",
        "| condition | questions | contains | Δ contains [95% CI] | F1 | gold NLL | Δ NLL [95% CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        c, nll = row["contains"], row["nll"]
        dc, dn = c.get("vs_base", {}), nll.get("vs_base", {})
        fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
        ci = lambda d: "" if not d or d.get("ci") is None else f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"  # noqa: E731
        lines.append(
            f"| {row['condition']} | {c['n']} | {fmt(c['mean'])} | {fmt(dc.get('diff'))} {ci(dc)} | "
            f"{fmt(row['f1']['mean'])} | {fmt(nll['mean'])} | {fmt(dn.get('diff'))} {ci(dn)} |"
        )
    update = store.records(TRAIN).get(TRAIN_UNIT)
    if update is not None and update.status == "ok":
        r = update.result
        lines += [
            "",
            f"update: {r['sequences']} sequences, {r['steps']} steps, "
            f"loss {r['loss_first']:.3f} → {r['loss_last']:.3f}",
        ]
    text = "\n".join(lines)
    (store.report_dir() / "knowledge_cpt.md").write_text(text + "\n", encoding="utf-8")
    return text
