"""Continual self-edits (seal-reference §B8): does a model that keeps editing itself forget what it learnt?

A sequence takes K passages. Step 0 answers the questions of all K with the unadapted model; step j (1..K) has the
current model write a self-edit of passage j, trains a fresh LoRA on its sequences, folds that LoRA into the weights
(`ttt.fold`), and answers the questions of every passage seen so far. Row j of the (K+1)×K matrix holds step j's
accuracy per passage (row 0: all K; row j: the first j), averaged over `continual.sequences` sequences of
different passages. The matrix is written as JSON and as a heatmap PNG.

Units `s{r}.{j}` of one stage, `continual`; a sequence is one group (chunks and --only take whole sequences) and
its steps run in order. Each step records its adapter as an artifact: a resumed worker reloads the base model and
folds the recorded adapters again, in order, which gives the same weights bit for bit, so a SIGKILL costs only the
step in flight.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import fmean
from typing import Any

from runners.config import Config, ConfigError
from runners.pipelines import arc_ttt
from runners.pipelines.knowledge_seal import _shuffled, make_domain
from runners.pipelines.seal_loop import Processor, WorkerPool, model_location
from runners.stage import Outcome, StageSpec, unit_seed
from runners.store import RunStore

STAGE = "continual"
CONFIG_SECTIONS = ("model", "train", "knowledge", "judge", "seal", "continual", "run")
CONFIG_EXCLUDE = (  # besides runners.config.OPERATIONAL_KEYS, which no identity includes
    "judge.host",
    "judge.concurrency",
    "judge.timeout_s",
    "judge.retries",
    "seal.iterations",
    "seal.evaluate_final",
    "seal.select",
    "seal.threshold",
    "knowledge.train_passages",
    "knowledge.eval_passages",
    "knowledge.new_train_each_iteration",
    "knowledge.rounds",
    "knowledge.reward",
    "knowledge.passage_only",
    "knowledge.passage_repeated",
)


def unit_name(r: int, j: int) -> str:
    return f"s{r}.{j}"


def split_unit(unit: str) -> tuple[int, int]:
    head, step = unit.split(".", 1)
    return int(head[1:]), int(step)


def sequences_of(cfg: Config) -> list[list[Any]]:
    """The K passages of each sequence: consecutive slices of the shuffled passages from `continual.start`."""
    c = cfg.continual
    if c.passages_per_sequence < 1 or c.sequences < 1 or c.start < 0:
        raise ConfigError("continual: passages_per_sequence and sequences must be >= 1, start >= 0")
    shuffled = _shuffled(cfg)
    need = c.start + c.sequences * c.passages_per_sequence
    if need > len(shuffled):
        raise ConfigError(
            f"continual: {c.sequences} sequences x {c.passages_per_sequence} passages from {c.start} need {need} "
            f"passages; {cfg.knowledge.source} has {len(shuffled)}"
        )
    k = c.passages_per_sequence
    return [shuffled[c.start + r * k : c.start + (r + 1) * k] for r in range(c.sequences)]


def _correctness_note(cfg: Config) -> str | None:
    if cfg.judge.spec == "deferred":
        return "judge deferred: the matrix uses `contains`; `seal export` gives the answers for a judge"
    return None


def _domain(cfg: Config, store: RunStore | None, passages: list[Any]) -> Any:
    if cfg.judge.spec == "deferred":  # each step needs its accuracy now: a metric decides, the answers stay
        from dataclasses import replace

        cfg = replace(cfg, knowledge=replace(cfg.knowledge, correct="contains"))
    return make_domain(cfg, store, passages)


def data_identity(cfg: Config) -> dict[str, str]:
    import hashlib

    return {
        f"knowledge/{p.id}": hashlib.sha256(json.dumps(p.to_dict(), sort_keys=True).encode()).hexdigest()
        for seq in sequences_of(cfg)
        for p in seq
    }


def stages(cfg: Config, store: RunStore) -> list[StageSpec]:
    arc_ttt.check_model(cfg)
    if cfg.seal.decoding != "free":
        raise ConfigError("seal.decoding: the knowledge domain samples free text")
    seqs = sequences_of(cfg)
    domain = _domain(cfg, store, [p for seq in seqs for p in seq])
    k = cfg.continual.passages_per_sequence
    units = [unit_name(r, j) for r in range(len(seqs)) for j in range(k + 1)]

    def load_worker(model_path: str) -> Any:
        from seal.domain import Worker

        model, tokenizer, slot, generator = arc_ttt.load_worker_model(cfg, model_path, lora=cfg.knowledge.lora)
        return Worker(model, tokenizer, slot, generator, model_path)

    pool = WorkerPool(load_worker)

    def make_processor() -> Processor:
        base_path = model_location(cfg, store, {"spec": cfg.model.spec})
        state: dict[str, Any] = {"at": None}  # (sequence, last folded step) the held model is at

        def model_at(r: int, j: int) -> Any:
            """The worker whose weights have steps 1..j of sequence r folded in."""
            if state["at"] == (r, j):
                return pool.get(base_path)
            pool.release()  # the held weights carry another sequence's (or a later step's) folds: start afresh
            worker = pool.get(base_path)
            from ttt.fold import fold_adapter

            records = store.records(STAGE)
            for step in range(1, j + 1):
                record = records[unit_name(r, step)]
                worker.slot.load(store.artifact(record.artifacts["adapter"]))
                fold_adapter(worker.slot)
            state["at"] = (r, j)
            return worker

        def process(unit: str) -> Outcome:
            r, j = split_unit(unit)
            seq = seqs[r]
            if j > 0 and unit_name(r, j - 1) not in store.records(STAGE):
                raise RuntimeError(f"{unit}: step {j - 1} of sequence {r} is not recorded (steps run in order)")
            worker = model_at(r, j - 1 if j > 0 else 0)
            result: dict[str, Any] = {"sequence": r, "step": j, "passages": [p.id for p in seq]}
            artifacts: dict[str, str] = {}
            if j > 0:
                result["edit"] = _self_edit_step(cfg, domain, worker, seq[j - 1].id, unit)
                relative = f"artifacts/{STAGE}/{unit}/adapter"
                with store.write_artifact(STAGE, unit) as folder:
                    worker.slot.save(folder / "adapter")
                from ttt.fold import fold_adapter

                fold_adapter(worker.slot)
                state["at"] = (r, j)
                artifacts["adapter"] = relative
            seen = seq if j == 0 else seq[:j]
            evaluations = {p.id: domain.evaluate_baseline(worker, p.id).result for p in seen}
            result["accuracy"] = {pid: e["scores"]["accuracy"] for pid, e in evaluations.items()}
            result["scores"] = {pid: e["scores"] for pid, e in evaluations.items()}
            result["evaluations"] = {pid: {"rounds": e["rounds"]} for pid, e in evaluations.items()}
            return Outcome("ok", result, artifacts=artifacts)

        return Processor(process, on_close=pool.release)

    return [StageSpec(STAGE, units, make_processor, group=lambda unit: unit.split(".", 1)[0])]


def _self_edit_step(cfg: Config, domain: Any, worker: Any, group: str, unit: str) -> dict[str, Any]:
    """Sample one self-edit of `group` from the current model and train a fresh LoRA on its sequences (the passage
    alone when the model wrote nothing usable, which is recorded)."""
    from dataclasses import replace

    from seal.knowledge.domain import passage_sequence
    from seal.selfedit import SampleSettings, sample_self_edits
    from ttt.examples import encode_text
    from ttt.train import train

    settings = SampleSettings(
        k=1,
        temperature=cfg.seal.temperature,
        top_p=cfg.seal.top_p,
        max_new_tokens=cfg.seal.max_new_tokens,
        max_attempts=None if cfg.seal.max_attempts is None else max(1, cfg.seal.max_attempts),
    )
    sampled = sample_self_edits(
        worker.generator,
        domain.prompt(group),
        domain.parse,
        settings,
        seed=unit_seed(cfg.run.seed, f"{STAGE}.sample.{unit}"),
        key=domain.edit_key,
        to_dict=domain.edit_to_dict,
    )
    attempt = sampled.slot_attempts()[0]
    if attempt.accepted:
        sequences = domain.sequences(group, domain.parse(attempt.text))
    else:
        sequences = [passage_sequence(domain.passages[group])]
    recipe = domain.recipe
    loss_start = recipe.loss_start if recipe.loss_start is not None else 0
    examples = [encode_text(worker.tokenizer, text, loss_start=loss_start) for text in sequences]
    worker.slot.reset()
    trained = train(worker.slot, examples, replace(recipe.train, seed=unit_seed(cfg.run.seed, f"{STAGE}.{unit}")))
    return {
        "passage": group,
        "text": attempt.text,
        "accepted": attempt.accepted,
        "reason": attempt.reason,
        "sequences": len(sequences),
        "steps": trained.steps,
        "loss_first": trained.losses[0] if trained.losses else None,
        "loss_last": trained.losses[-1] if trained.losses else None,
    }


# ---------------------------------------------------------------------------------------------------------------
# The matrix
# ---------------------------------------------------------------------------------------------------------------


def forgetting_matrix(cfg: Config, store: RunStore) -> dict[str, Any]:
    """(K+1)×K: row = steps folded in, column = position of the passage in its sequence; the mean accuracy over
    the sequences recorded so far (None where no sequence has the cell)."""
    k = cfg.continual.passages_per_sequence
    cells: list[list[list[float]]] = [[[] for _ in range(k)] for _ in range(k + 1)]
    sequences = set()
    for unit, record in store.records(STAGE).items():
        if record.status != "ok":
            continue
        r, j = split_unit(unit)
        sequences.add(r)
        passages = record.result["passages"]
        for c, pid in enumerate(passages):
            value = record.result["accuracy"].get(pid)
            if value is not None:
                cells[j][c].append(float(value))
    return {
        "rows": k + 1,
        "columns": k,
        "sequences": sorted(sequences),
        "correct_by": _metric_name(store),
        "mean": [[fmean(v) if v else None for v in row] for row in cells],
        "count": [[len(v) for v in row] for row in cells],
    }


def _metric_name(store: RunStore) -> str | None:
    for record in store.records(STAGE).values():
        for scores in (record.result or {}).get("scores", {}).values():
            return scores.get("correct_by")
    return None


def write_heatmap(matrix: dict[str, Any], path: Path) -> Path:
    import os
    import tempfile

    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="mpl-"))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = [[float("nan") if v is None else v for v in row] for row in matrix["mean"]]
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * matrix["columns"], 1.0 + 0.6 * matrix["rows"]))
    try:
        image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis")
        for j, row in enumerate(values):
            for c, v in enumerate(row):
                if v == v:  # not NaN
                    ax.text(c, j, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 else "black")
        ax.set_xlabel("passage (position in the sequence)")
        ax.set_ylabel("self-edits folded in")
        ax.set_title(f"accuracy ({matrix.get('correct_by') or '?'}), mean of {len(matrix['sequences'])} sequences")
        fig.colorbar(image, ax=ax)
        fig.tight_layout()
        tmp = path.with_suffix(".tmp.png")
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
    return path


def export_items(cfg: Config, store: RunStore) -> list[dict[str, Any]]:
    """Every answer of every step as grading items (`seal export`), ids `continual/s{r}.{j}/{passage}/r0/q{n}`."""
    seqs = sequences_of(cfg)
    domain = _domain(cfg, None, [p for seq in seqs for p in seq])
    items: list[dict[str, Any]] = []
    for unit, record in sorted(store.records(STAGE).items()):
        if record.status != "ok":
            continue
        for pid, evaluation in record.result.get("evaluations", {}).items():
            provenance = {"prefix": f"{STAGE}/{unit}/{pid}", "stage": STAGE, "unit_id": unit, "model": cfg.model.spec}
            items += domain.grading_items(pid, evaluation, provenance)
    return items


def summarize(cfg: Config, store: RunStore) -> str:
    if not store.records(STAGE):
        return "no continual step recorded yet"
    matrix = forgetting_matrix(cfg, store)
    report = store.report_dir()
    (report / "continual_matrix.json").write_text(json.dumps(matrix, indent=2) + "\n", encoding="utf-8")
    png = write_heatmap(matrix, report / "continual_matrix.png")
    header = "| after step | " + " | ".join(f"p{c + 1}" for c in range(matrix["columns"])) + " |"
    lines = [
        f"# Continual self-edits: {cfg.experiment} ({cfg.model.spec})",
        "",
        f"Accuracy by {matrix['correct_by']}, mean over sequences {matrix['sequences']} (row j: j self-edits folded "
        "into the weights).",
    ]
    note = _correctness_note(cfg)
    if note:
        lines += ["", note]
    lines += ["", header, "|" + "---|" * (matrix["columns"] + 1)]
    for j, row in enumerate(matrix["mean"]):
        lines.append(f"| {j} | " + " | ".join("" if v is None else f"{v:.2f}" for v in row) + " |")
    text = "\n".join(lines)
    (report / "continual.md").write_text(text + "\n", encoding="utf-8")
    return text + f"\nmatrix: {report / 'continual_matrix.json'}; heatmap: {png}"
