"""Rewards that wait for verdicts graded elsewhere (the judge runs on the user's laptop, the GPU on Colab).

Two stages follow the inner loops of an iteration (or of an evaluation) whose domain needs verdicts:

    {prefix}.export   one unit: every answer of the base and inner stages as a grading bundle,
                      `grading/<prefix>/bundle.jsonl` in the run directory, each item's provenance naming
                      (iteration, passage, self-edit, round, question)
    {prefix}.reward   per inner unit: the self-edit's reward from the imported verdicts. The stage waits (exit 75)
                      until `seal grade import RUN_DIR GRADES_DIR` has brought a verdict for every item back

Between the two the user runs `seal grade <bundle> --judge ollama:<model> --out GRADES_DIR` where a judge answers.
An item the judge left unscored is no wrong answer and no final reward: the reward stage keeps waiting (exit 75,
saying how many answers are unscored) until a later grading, imported, scores it.
"""

from __future__ import annotations

from typing import Any

from runners.config import Config
from runners.stage import Outcome, StageSpec
from runners.store import RunStore, RunStoreError, UnitRecord

EXPORT_UNIT = "bundle"


def item_prefix(prefix: str, unit: str) -> str:
    """Where a unit's grading items live in the bundle's id space: `it0/p0017.k1`, `it0/p0017` (its base)."""
    return f"{prefix}/{unit}"


def deferred_reward_stages(
    cfg: Config,
    store: RunStore,
    domain: Any,
    prefix: str,
    base: str,
    inner: str,
    inner_units: list[str],
    *,
    iteration: int,
) -> list[StageSpec]:
    from runners.deferred import bundle_path, export_bundle, imported_verdicts

    export, reward = f"{prefix}.export", f"{prefix}.reward"
    name = prefix  # the bundle's name inside the run directory

    def make_export() -> Any:
        def process(_: str) -> Outcome:
            items: list[dict[str, Any]] = []
            for group, record in sorted(store.records(base).items()):
                items += domain.grading_items(
                    group, record.result["evaluation"], _provenance(cfg, iteration, prefix, base, group, None)
                )
            for unit, record in sorted(store.records(inner).items()):
                result = record.result or {}
                if record.status != "ok" or result.get("zero_epochs") or "evaluation" not in result:
                    continue  # no answers of its own: invalid, or scored like the base model
                group, k = unit.rsplit(".k", 1)
                items += domain.grading_items(
                    group, result["evaluation"], _provenance(cfg, iteration, prefix, inner, unit, int(k))
                )
            path = export_bundle(store.root, name, items, {"stage": export, "iteration": iteration})
            relative = str(path.relative_to(store.root))
            return Outcome("ok", {"bundle": relative, "items": len(items)}, artifacts={"bundle": relative})

        return process

    def ready() -> str | None:
        verdicts = imported_verdicts(store.root, name)
        bundle = bundle_path(store.root, name)
        how = (
            f"copy {bundle} to a machine where a judge answers, run `seal grade {bundle.name} --judge "
            f"ollama:<model> --out <grades>` there, bring <grades> back and run `seal grade import {store.root} "
            "<grades>`, then run this command again"
        )
        if verdicts is None:
            return f"the answers of {prefix} wait for their verdicts: {how}"
        exported = store.records(export).get(EXPORT_UNIT)
        expected = exported.result.get("items", 0) if exported is not None else 0
        if len(verdicts) < expected:
            return f"{expected - len(verdicts)} of {expected} answers of {prefix} have no verdict yet: {how}"
        unscored = sum(1 for v in verdicts.values() if v is None)
        if unscored:
            # A verdict the judge could not give (down, erroring, unparseable replies) is no wrong answer and no
            # final reward: the rewards wait until a later grading scores it.
            again = (
                f"grade {bundle} again where a judge answers (`seal grade {bundle.name} --judge ollama:<model> "
                f"--out <grades>`: with the same --out it retries the requests that failed; replies the judge gave "
                "but that held no verdict are cached, so add --rescore, or grade with another judge), bring <grades> "
                f"back and run `seal grade import {store.root} <grades>`, then run this command again"
            )
            return f"{unscored} of {expected} answers of {prefix} are still unscored by the judge: {again}"
        _refuse_stale_downstream()
        return None

    def _refuse_stale_downstream() -> None:
        """Rewards an older version recorded unscored (ok, reward None) are recomputed (`redo`); the stages after
        them cannot be, if they already ran on those rewards: the journal is append-only and has no way to
        invalidate a finished stage's records and everything built on them."""
        if not any(reward_not_final(r) for r in store.records(reward).values()):
            return
        later = [s for s in (f"{prefix}.select", f"{prefix}.sft", f"{prefix}.merge") if store.records(s)]
        if later:
            raise RunStoreError(
                f"{reward} holds rewards recorded while their answers were unscored (by an earlier version), and "
                f"{', '.join(later)} already ran on them: their selection is not what the graded rewards give, and "
                f"the run cannot be corrected in place; start a new run directory for the iterations from {prefix} on"
            )

    def make_reward() -> Any:
        verdicts = imported_verdicts(store.root, name) or {}
        bases = store.records(base)
        rescored_bases: dict[str, tuple[dict[str, Any], float | None]] = {}

        def base_of(group: str) -> tuple[dict[str, Any], float | None]:
            if group not in rescored_bases:
                evaluation = bases[group].result["evaluation"]
                rescored_bases[group] = domain.rescore(evaluation, verdicts, None, item_prefix(prefix, group))
            return rescored_bases[group]

        def process(unit: str) -> Outcome:
            record = store.records(inner)[unit]
            group = unit.rsplit(".k", 1)[0]
            base_evaluation, base_reward = base_of(group)
            result = record.result or {}
            if record.status != "ok":
                return Outcome("invalid", {"reward": result.get("reward"), "code": result.get("code")}, record.reason)
            base_unscored = int((base_evaluation.get("scores") or {}).get("unscored") or 0)
            if result.get("zero_epochs"):
                out = {"reward": base_reward, "zero_epochs": True, "base_reward": base_reward}
                return _final(unit, {**out, "unscored": base_unscored})
            evaluation, value = domain.rescore(
                result["evaluation"], verdicts, base_evaluation, item_prefix(prefix, unit)
            )
            unscored = int((evaluation.get("scores") or {}).get("unscored") or 0) + base_unscored
            out = {"reward": value, "base_reward": base_reward, "scores": evaluation.get("scores"), "k": result["k"]}
            return _final(unit, {**out, "unscored": unscored})

        def _final(unit: str, result: dict[str, Any]) -> Outcome:
            if result["unscored"]:  # `ready` waits for every verdict; one missing here is no final reward either
                why = f"{result['unscored']} answers of {unit} (or of its base) are unscored: its reward is not final"
                return Outcome("error", result, why)
            return Outcome("ok", result)

        return process

    return [
        StageSpec(export, [EXPORT_UNIT], make_export, needs=(base, inner), single=True),
        StageSpec(
            reward,
            list(inner_units),
            make_reward,
            needs=(export,),
            group=lambda unit: unit.rsplit(".k", 1)[0],
            ready=ready,
            redo=reward_not_final,
        ),
    ]


def reward_not_final(record: UnitRecord) -> bool:
    """A reward recorded ok while answers it depends on were unscored: not a result, processed again once graded.
    Records of this version carry their `unscored` count (never > 0 when ok); an older version's record with no
    reward and no count was written so (its answers unscored) and is recomputed once."""
    result = record.result or {}
    if record.status != "ok" or result.get("reward") is not None:
        return False
    if "unscored" in result:
        return bool(result["unscored"])
    return True


def _provenance(cfg: Config, iteration: int, prefix: str, stage: str, unit: str, k: int | None) -> dict[str, Any]:
    group = unit.rsplit(".k", 1)[0] if k is not None else unit
    return {
        "prefix": item_prefix(prefix, unit),
        "stage": stage,
        "unit_id": unit,
        "iteration": iteration,
        "passage": group,
        "self_edit": k,  # None: the unadapted model's answers
        "model": cfg.model.spec,
    }
