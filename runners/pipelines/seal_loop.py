"""The SEAL outer loop as stages, written once for any `seal.domain.Domain`.

Iteration i of one run directory:

    it{i}.sample   per group: k self-edits from iteration i's model, in one batched call, bounded attempts
    it{i}.base     per group: the group evaluated without adaptation (the in-context baseline, and the score of
                   every self-edit trained 0 epochs, computed once)
    it{i}.inner    per (group, k): apply the self-edit (one inner loop), evaluate, reward
    it{i}.select   one unit: which self-edits are cloned (seal.select), written as SFT rows
    it{i}.sft      one unit: behaviour cloning through TRL, resumable mid-training from its work folder
    it{i}.merge    one unit: the adapter merged in fp32 into iteration i+1's model (or the model carried forward)

Iteration 0 samples from `model.spec`; iteration i from the model that `it{i-1}.merge` names in its journal line.
After the last RL iteration, `seal.evaluate_final` adds `it{N}.sample/base/inner`: the new model's own self-edits,
evaluated. Raising `seal.iterations` later turns those into the first stages of iteration N and continues.
Every stage waits (barrier) until the stages it reads are recorded in every chunk's journal.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runners.config import Config
from runners.stage import Outcome, StageSpec, unit_seed
from runners.store import RunStore
from seal.domain import Domain, Worker

log = logging.getLogger(__name__)

SELECT_UNIT, SFT_UNIT, MERGE_UNIT = "select", "sft", "merge"


def stage_name(i: int, step: str) -> str:
    return f"it{i}.{step}"


def inner_unit(group: str, k: int) -> str:
    return f"{group}.k{k}"


def split_inner_unit(unit: str) -> tuple[str, int]:
    group, k = unit.rsplit(".k", 1)
    return group, int(k)


def group_of_inner(unit: str) -> str:
    return split_inner_unit(unit)[0]


def view_seed(cfg: Config, group: str) -> int:
    """One seed per group for its evaluation views, shared by every self-edit and every iteration, so rewards
    differ because of the self-edit and iterations are compared on the same views."""
    return unit_seed(cfg.run.seed, f"views.{group}")


@dataclass
class Processor:
    """A stage's per-worker function plus the `close()` that frees what it holds (a model) when the stage ends."""

    fn: Callable[[str], Outcome]
    on_close: Callable[[], None] | None = None

    def __call__(self, unit: str) -> Outcome:
        return self.fn(unit)

    def close(self) -> None:
        if self.on_close is not None:
            self.on_close()
            self.on_close = None


class _TimedGenerator:
    """Counts the seconds spent inside `generate` (what the iteration benchmark calls generation time)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds = 0.0

    def generate(self, requests: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.inner.generate(requests)
        finally:
            self.seconds += time.perf_counter() - start


class WorkerPool:
    """Holds at most one worker: stages that use the same model (sample, base, inner and the controls of one
    iteration) share it instead of reloading it, and asking for another model closes the held one first, so the
    previous iteration's model has left memory before the next one loads."""

    def __init__(self, load: Callable[[str], Worker]) -> None:
        self._load = load
        self._held: Worker | None = None
        self._path: str | None = None

    def get(self, model_path: str) -> Worker:
        if self._held is not None and self._path == model_path:
            return self._held
        self.release()
        self._held, self._path = self._load(model_path), model_path
        return self._held

    def release(self) -> None:
        """Free the held model (before SFT or a merge load a model of their own)."""
        if self._held is not None:
            self._held.close()
        self._held = self._path = None


@dataclass
class LoopParts:
    """What a domain pipeline hands the loop."""

    domain: Domain
    workers: WorkerPool  # model folder → a worker holding that model, shared by consecutive stages
    # The groups RL iteration i trains on (default: every group of the domain, every iteration).
    train_groups: Callable[[int], list[str]] | None = None
    # Held-out groups the models are evaluated on (`eval{i}.*` stages for iteration 0's and the final model, and the
    # controls); None: the final model is evaluated on the training groups as `it{N}.*` (ARC).
    eval_groups: list[str] | None = None

    def groups_of_iteration(self, i: int) -> list[str]:
        return list(self.train_groups(i)) if self.train_groups is not None else list(self.domain.groups())


# ---------------------------------------------------------------------------------------------------------------
# Models of each iteration
# ---------------------------------------------------------------------------------------------------------------


def model_ref(cfg: Config, store: RunStore, i: int) -> dict[str, str]:
    """Iteration i's model: `{"spec": …}` for the configured model, `{"artifact": …}` for a merged one (relative
    to the run directory, so a run directory can move between machines)."""
    if i == 0:
        return {"spec": cfg.model.spec}
    record = store.records(stage_name(i - 1, "merge")).get(MERGE_UNIT)
    if record is None or record.status != "ok":
        raise RuntimeError(f"iteration {i} needs the model of {stage_name(i - 1, 'merge')}, which is not recorded")
    return dict(record.result["model"])


def model_location(cfg: Config, store: RunStore, ref: dict[str, str]) -> str:
    if "artifact" in ref:
        return str(store.artifact(ref["artifact"]))
    from ttt.models import resolve_model

    return resolve_model(ref["spec"], cfg.model.cache_dir)


# ---------------------------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------------------------


def eval_name(i: int, step: str) -> str:
    return f"eval{i}.{step}"


def seal_stages(cfg: Config, store: RunStore, parts: LoopParts, controls: Sequence[StageSpec] = ()) -> list[StageSpec]:
    """Every iteration's stages, then the evaluations. `controls` (stages on iteration 0's model) run right after
    iteration 0's model has been evaluated on the groups they share, while that model is still loaded."""
    stages: list[StageSpec] = []
    n = cfg.seal.iterations
    held_out = parts.eval_groups is not None
    for i in range(n):
        rl = iteration_stages(cfg, store, parts, i, rl=True)
        stages += rl
        if i == 0 and not held_out:
            stages[len(_answer_stages(rl)) : len(_answer_stages(rl))] = list(controls)
    if not cfg.seal.evaluate_final:
        return stages  # held-out controls sit beside the held-out evaluation, which is off
    if not held_out:
        stages += iteration_stages(cfg, store, parts, n, rl=False)
        return stages + (list(controls) if n == 0 else [])
    # Held-out evaluation: iteration 0's model (the base-model self-edits, and the controls beside them), then the
    # final one. Iteration 0's evaluation comes first so that raising seal.iterations adds stages and moves none.
    assert parts.eval_groups is not None
    stages += evaluation_stages(cfg, store, parts, 0, parts.eval_groups)
    stages += list(controls)
    if n > 0:
        stages += evaluation_stages(cfg, store, parts, n, parts.eval_groups)
    return stages


def _answer_stages(stages: Sequence[StageSpec]) -> list[StageSpec]:
    """The leading stages that answer with the iteration's model (sample, base, inner): controls go after them."""
    out = []
    for spec in stages:
        if spec.name.rsplit(".", 1)[-1] not in ("sample", "base", "inner"):
            break
        out.append(spec)
    return out


def iteration_stages(cfg: Config, store: RunStore, parts: LoopParts, i: int, *, rl: bool) -> list[StageSpec]:
    """RL iteration i on its training groups (rl), or the final model's own self-edits evaluated as `it{N}.*`."""
    # The final model is evaluated on the groups iteration 0 trained on, so it0 and it{N} compare like for like.
    groups = parts.groups_of_iteration(i if rl else 0)
    reuse = stage_name(i - 1, "base") if i > 0 else None
    stages = answer_stages(cfg, store, parts, i, groups, prefix=f"it{i}", reuse_base_from=reuse)
    if rl:
        stages += _restem_stages(cfg, store, i, parts.workers, rewarded_by=stages[-1].name)
    return stages


def evaluation_stages(cfg: Config, store: RunStore, parts: LoopParts, i: int, groups: list[str]) -> list[StageSpec]:
    """Iteration i's model on the held-out groups: `eval{i}.sample/base/inner` (and the deferred-grading stages)."""
    return answer_stages(cfg, store, parts, i, groups, prefix=f"eval{i}", reuse_base_from="eval0.base" if i else None)


def sampler(cfg: Config, store: RunStore, parts: LoopParts, i: int, stage: str, k: int) -> Callable[[], Processor]:
    """The processor maker of a sample stage: per group, k self-edits from iteration i's model."""

    def make_sample() -> Processor:
        from seal.selfedit import SampleSettings, sample_self_edits

        domain = parts.domain
        ref = model_ref(cfg, store, i)
        worker = parts.workers.get(model_location(cfg, store, ref))
        settings = SampleSettings(
            k=k,
            temperature=cfg.seal.temperature,
            top_p=cfg.seal.top_p,
            max_new_tokens=cfg.seal.max_new_tokens,
            max_attempts=None if cfg.seal.max_attempts is None else max(cfg.seal.max_attempts, k),
            dedupe=cfg.seal.dedupe,
        )

        def process(group: str) -> Outcome:
            prompt = domain.prompt(group)
            prompt = prompt if isinstance(prompt, str) else [dict(m) for m in prompt]
            timed = _TimedGenerator(worker.generator)
            generator: Any = timed
            if cfg.seal.decoding == "template":
                from seal.structured import TemplateGenerator

                generator = TemplateGenerator(timed, domain.template())  # type: ignore[attr-defined]
            sampled = sample_self_edits(
                generator,
                prompt,
                domain.parse,
                settings,
                seed=unit_seed(cfg.run.seed, f"{stage}.{group}"),
                key=domain.edit_key,
                to_dict=domain.edit_to_dict,
            )
            result = {"model": ref, "prompt": prompt, **sampled.to_dict()}
            return Outcome("ok", {**result, "timings": {"generate": timed.seconds}})

        return Processor(process)

    return make_sample


def baseliner(
    cfg: Config, store: RunStore, parts: LoopParts, i: int, reuse_from: str | None
) -> Callable[[], Processor]:
    """The processor maker of a base stage: per group, iteration i's model evaluated without adaptation."""

    def make_base() -> Processor:
        ref = model_ref(cfg, store, i)
        worker = parts.workers.get(model_location(cfg, store, ref))
        earlier = store.records(reuse_from) if reuse_from else {}

        def process(group: str) -> Outcome:
            before = earlier.get(group)
            if before is not None and before.status == "ok" and before.result.get("model") == ref:
                # The model was carried forward: same model, same views, so the same answers. Not recomputed.
                return Outcome("ok", {**before.result, "reused_from": reuse_from})
            evaluation = parts.domain.evaluate(worker, group, None, view_seed=view_seed(cfg, group), train_seed=0)
            return Outcome("ok", {"model": ref, "reward": evaluation.reward, "evaluation": evaluation.result})

        return Processor(process)

    return make_base


def answer_stages(
    cfg: Config,
    store: RunStore,
    parts: LoopParts,
    i: int,
    groups: list[str],
    *,
    prefix: str,
    reuse_base_from: str | None,
) -> list[StageSpec]:
    """sample → base → inner with iteration i's model on `groups` (stage names `{prefix}.…`), then, when the
    domain's rewards wait for verdicts graded elsewhere, export → reward. The last stage holds the rewards."""
    domain = parts.domain
    after_previous = (stage_name(i - 1, "merge"),) if i > 0 else ()
    sample, base, inner = (f"{prefix}.{s}" for s in ("sample", "base", "inner"))
    k_total = cfg.seal.self_edits

    def worker_for_iteration() -> tuple[Worker, dict[str, str]]:
        ref = model_ref(cfg, store, i)
        return parts.workers.get(model_location(cfg, store, ref)), ref

    make_sample = sampler(cfg, store, parts, i, sample, k_total)
    make_base = baseliner(cfg, store, parts, i, reuse_base_from)

    def make_inner() -> Processor:
        worker, ref = worker_for_iteration()
        samples = store.records(sample)
        bases = store.records(base)

        def process(unit: str) -> Outcome:
            group, k = split_inner_unit(unit)
            sampled = samples[group].result
            attempt = sampled["attempts"][sampled["slots"][k]]
            head = {"model": ref, "k": k, "attempt": attempt["index"], "text": attempt["text"]}
            if not attempt["accepted"]:
                return _unusable(cfg, head, bases[group].result, attempt["reason"], attempt["code"])
            edit = domain.parse(attempt["text"])
            evaluation = domain.evaluate(
                worker,
                group,
                edit,
                view_seed=view_seed(cfg, group),
                train_seed=unit_seed(cfg.run.seed, f"{inner}.{unit}"),
                base=bases[group].result.get("evaluation"),
            )
            head["edit"] = domain.edit_to_dict(edit)
            if evaluation.rejected is not None:  # found while applying it (ARC: over SEAL's step cap)
                head["train"] = evaluation.result.get("train")
                return _unusable(cfg, head, bases[group].result, evaluation.rejected.reason, evaluation.rejected.code)
            return Outcome("ok", {**head, "reward": evaluation.reward, "evaluation": evaluation.result})

        return Processor(process)

    stages = [
        StageSpec(sample, list(groups), make_sample, needs=after_previous),
        StageSpec(base, list(groups), make_base, needs=after_previous),
        StageSpec(
            inner,
            [inner_unit(g, k) for g in groups for k in range(k_total)],
            make_inner,
            needs=(sample, base),
            group=group_of_inner,
            needs_per_group=True,
        ),
    ]
    if _defers_rewards(domain):
        from runners.pipelines.deferred_rewards import deferred_reward_stages

        stages += deferred_reward_stages(
            cfg,
            store,
            domain,
            prefix,
            base,
            inner,
            list(stages[2].units),
            iteration=i,  # type: ignore[arg-type]
        )
    return stages


def _defers_rewards(domain: Any) -> bool:
    needs = getattr(domain, "needs_verdicts", None)
    return bool(callable(needs) and needs())


def _unusable(cfg: Config, head: dict[str, Any], base: dict[str, Any], reason: str, code: str) -> Outcome:
    """A self-edit that cannot be applied as written. `reward0`: recorded invalid, reward 0. SEAL's rule
    (`train_zero_epochs`): it trains 0 epochs, so it scores what the unadapted model scores (the `base` stage)."""
    if cfg.seal.invalid == "reward0":
        return Outcome("invalid", {**head, "reward": 0.0, "code": code}, reason)
    scored = {"reward": base.get("reward"), "zero_epochs": True, "code": code, "evaluation": base.get("evaluation")}
    return Outcome("ok", {**head, **scored}, reason)


def _restem_stages(cfg: Config, store: RunStore, i: int, workers: WorkerPool, rewarded_by: str) -> list[StageSpec]:
    """select → sft → merge. `rewarded_by`: the stage whose records carry the rewards, one per inner unit (the
    inner stage itself, or the reward stage that filled in verdicts graded elsewhere)."""
    sample, inner = stage_name(i, "sample"), stage_name(i, "inner")
    select_stage, sft_stage, merge_stage = (stage_name(i, s) for s in ("select", "sft", "merge"))

    def make_select() -> Processor:
        from seal.restem import Scored, select

        def process(_: str) -> Outcome:
            samples = store.records(sample)
            rewards = store.records(rewarded_by)
            candidates = []
            for unit, record in sorted(store.records(inner).items()):
                if record.status != "ok":
                    continue  # invalid self-edits are never cloned; errors would have blocked the barrier
                group, k = split_inner_unit(unit)
                stored = samples[group].result["prompt"]
                prompt = stored if isinstance(stored, str) else tuple(stored)
                reward = rewards[unit].result.get("reward") if unit in rewards else None
                candidates.append(Scored(group, k, reward, prompt, record.result["text"]))
            chosen = select(candidates, cfg.seal.select, cfg.seal.threshold)
            lines = [
                json.dumps(
                    {
                        "group": s.group,
                        "k": s.k,
                        "reward": s.reward,
                        "prompt": s.prompt if isinstance(s.prompt, str) else list(s.prompt),
                        "response": s.response,
                    }
                )
                for s in chosen
            ]
            with store.write_artifact(select_stage, SELECT_UNIT) as folder:
                (folder / "rows.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
            per_group: dict[str, int] = {}
            for item in chosen:
                per_group[item.group] = per_group.get(item.group, 0) + 1
            result = {
                "rule": cfg.seal.select,
                "candidates": len(candidates),
                "scored": sum(1 for c in candidates if c.reward is not None),
                "selected": [[item.group, item.k] for item in chosen],
                "per_group": per_group,
            }
            return Outcome("ok", result, artifacts={"rows": f"artifacts/{select_stage}/{SELECT_UNIT}/rows.jsonl"})

        return Processor(process)

    def make_sft() -> Processor:
        def process(_: str) -> Outcome:
            chosen = store.records(select_stage)[SELECT_UNIT]
            if not chosen.result["selected"]:
                reason = f"no self-edit of iteration {i} was selected ({cfg.seal.select}): the model is carried forward"
                return Outcome("ok", {"carried_forward": True, "reason": reason})
            workers.release()  # TRL loads the model afresh; the inference copy must not share the memory
            return _behaviour_clone(cfg, store, i, sft_stage, store.artifact(chosen.artifacts["rows"]))

        return Processor(process)

    def make_merge() -> Processor:
        def process(_: str) -> Outcome:
            cloned = store.records(sft_stage)[SFT_UNIT]
            previous = model_ref(cfg, store, i)
            if cloned.result.get("carried_forward"):
                return Outcome("ok", {"carried_forward": True, "model": previous})
            from ttt.merge import merge_adapter

            workers.release()
            base_path = model_location(cfg, store, previous)
            relative = f"artifacts/{merge_stage}/{MERGE_UNIT}/model"
            with store.write_artifact(merge_stage, MERGE_UNIT) as folder:
                _, how = merge_adapter(base_path, store.artifact(cloned.artifacts["adapter"]), folder / "model")
            return Outcome(
                "ok",
                {"carried_forward": False, "model": {"artifact": relative}, "merge": how},
                artifacts={"model": relative},
            )

        return Processor(process)

    return [
        StageSpec(
            select_stage,
            [SELECT_UNIT],
            make_select,
            needs=tuple(dict.fromkeys((sample, inner, rewarded_by))),
            single=True,
        ),
        StageSpec(sft_stage, [SFT_UNIT], make_sft, needs=(select_stage,), single=True),
        StageSpec(merge_stage, [MERGE_UNIT], make_merge, needs=(sft_stage,), single=True),
    ]


def _behaviour_clone(cfg: Config, store: RunStore, i: int, stage: str, rows_path: Path) -> Outcome:
    """TRL SFT on the selected rows, checkpointed in the unit's work folder: a SIGKILL resumes mid-training."""
    from seal.restem import Scored, sft_rows
    from ttt.models import load_tokenizer
    from ttt.sft import SftSettings, train_sft

    base_path = model_location(cfg, store, model_ref(cfg, store, i))
    tokenizer = load_tokenizer(base_path)
    items = []
    with open(rows_path, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            prompt = row["prompt"] if isinstance(row["prompt"], str) else tuple(row["prompt"])
            items.append(Scored(row["group"], row["k"], row["reward"], prompt, row["response"]))
    r = cfg.restem
    settings = SftSettings(
        rank=r.lora.rank,
        alpha=r.lora.alpha,
        dropout=r.lora.dropout,
        targets=r.lora.targets,
        epochs=r.epochs,
        batch_size=r.batch_size,
        grad_accum=r.grad_accum,
        lr=r.learning_rate,
        schedule=r.schedule,
        warmup_steps=r.warmup_steps,
        dtype=cfg.train.dtype,
        grad_checkpointing=cfg.train.grad_checkpointing,
        max_len=r.max_len,
        save_overhead=r.save_overhead,
        save_every_steps=r.save_every_steps,
        seed=unit_seed(cfg.run.seed, stage),
    )
    work = store.work_dir(stage, SFT_UNIT)
    finished = work / "result.json"  # written once training is over: a kill after it does not retrain
    relative = f"artifacts/{stage}/{SFT_UNIT}/adapter"
    if finished.exists() and (work / "adapter").is_dir():
        result = json.loads(finished.read_text(encoding="utf-8"))
    else:
        trained = train_sft(base_path, tokenizer, sft_rows(items, tokenizer), settings, work)
        result = {
            "carried_forward": False,
            "rows": len(items),
            "rows_used": trained.rows_used,
            "rows_dropped_too_long": trained.rows_dropped_too_long,
            "steps": trained.steps,
            "losses": trained.losses,
            "learning_rates": trained.learning_rates,
            "resumed_from_step": trained.resumed_from_step,
            "checkpoint_interval_steps": trained.checkpoint_interval_steps,
            "checkpoints_saved": trained.checkpoints_saved,
            "save_seconds": trained.save_seconds,
            "train_seconds": trained.train_seconds,
            "timings": {"train_compute": trained.forward_backward_seconds, "train_total": trained.train_seconds},
            "precision": trained.precision,
        }
        from runners.store import atomic_write_text

        atomic_write_text(finished, json.dumps(result))
    with store.write_artifact(stage, SFT_UNIT) as folder:
        shutil.copytree(work / "adapter", folder / "adapter")
    return Outcome("ok", result, artifacts={"adapter": relative})


def stage_outcome(cfg: Config, store: RunStore, stage: str) -> str | None:
    """One line saying what a loop stage found (printed by the run driver under the stage's counts)."""
    step = stage.split(".", 1)[-1]
    records = store.records(stage)
    if not records:
        return None
    results = [r.result or {} for r in records.values()]
    if step == "sample":
        drawn = sum(len(r.get("attempts", [])) for r in results)
        accepted = sum(sum(1 for a in r.get("attempts", []) if a["accepted"]) for r in results)
        codes: dict[str, int] = {}
        for r in results:
            for a in r.get("attempts", []):
                if not a["accepted"]:
                    codes[a["code"]] = codes.get(a["code"], 0) + 1
        rejected = ", ".join(f"{n} {code}" for code, n in sorted(codes.items()))
        # well-formed only: applying one can still reject it (over SEAL's step cap), which the inner stage counts
        return f"{accepted} of {drawn} sampled self-edits well-formed" + (f"; rejected: {rejected}" if rejected else "")
    if step in ("base", "oracle", "format", "wrong_task"):
        solved = sum(1 for r in results if r.get("reward"))
        return f"{solved} of {len(results)} tasks solved"
    if step == "inner":
        invalid = [r for r in records.values() if r.status == "invalid"]
        codes = {}
        for r in invalid:
            codes[r.result.get("code", "?")] = codes.get(r.result.get("code", "?"), 0) + 1
        solved = sum(1 for r in records.values() if r.status == "ok" and r.result.get("reward"))
        unusable = ", ".join(f"{n} {code}" for code, n in sorted(codes.items()))
        return f"{solved} of {len(records)} self-edits solved their task" + (
            f"; unusable: {unusable}" if unusable else ""
        )
    if step == "select":
        r = results[0]
        chosen = len(r.get("selected", []))
        if "scored" not in r:  # recorded before selections counted their scored candidates
            return f"{chosen} of {r.get('candidates', 0)} candidate self-edits selected ({r.get('rule')})"
        unscored = r.get("candidates", 0) - r["scored"]
        tail = f"; {unscored} candidates without a reward" if unscored else ""
        return f"{chosen} of {r['scored']} scored self-edits selected ({r.get('rule')}){tail}"
    if step == "sft":
        r = results[0]
        if r.get("carried_forward"):
            return r.get("reason")
        losses = r.get("losses") or [float("nan")]
        loss = f"loss {losses[0]:.3f} → {losses[-1]:.3f}"
        return f"cloned on {r.get('rows_used')} self-edits: {r.get('steps')} steps, {loss}"
    if step == "merge":
        r = results[0]
        model = r.get("model", {})
        return f"next model: {model.get('artifact') or model.get('spec')}" + (
            " (carried forward)" if r.get("carried_forward") else ""
        )
    return None
