"""One configuration source: typed defaults, YAML layers, `--set` overrides, validation and a canonical hash.

Layers, later wins: dataclass defaults ← `configs/platforms/<profile>.yaml` ← `configs/experiments/<name>.yaml`
← repeatable `--set a.b=c`. A profile holds what fits the hardware (dtype, rank, context, batch) as defaults; a value
an experiment writes down is a deliberate choice and wins over it (the demo's reduced rank stays reduced on an A100).
The result is a frozen `Config`; every error names the key (and the nearest valid one), the value and the expected
type, or the missing file and what exists.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ttt.settings import LoraSettings, TrainSettings

# The inner loop's own defaults (torch-free): the config sections below take theirs from these, never a copy.
_LORA = LoraSettings()
_TRAIN = TrainSettings()


class ConfigError(ValueError):
    """A configuration problem, phrased for the person who has to fix it."""


def bounded(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    min_items: int = 0,
) -> Any:
    """A numeric config field with a range, checked when the config is built: `ge`/`gt` an inclusive/exclusive
    minimum, `le`/`lt` an inclusive/exclusive maximum. On a tuple the range applies to each item, and `min_items`
    is its least length. None (in an optional field) is never out of range."""
    bounds = {"min": ge, "gt": gt, "max": le, "lt": lt, "min_items": min_items or None}
    return field(default=default, metadata={k: v for k, v in bounds.items() if v is not None})


def at_least(minimum: float, default: Any) -> Any:
    """A numeric config field that refuses values below `minimum` (checked when the config is built)."""
    return bounded(default, ge=minimum)


def span(default: tuple[int, int] | None) -> Any:
    """A `[start, end)` slice of passages: two integers with 0 <= start < end (checked when the config is built)."""
    return field(default=default, metadata={"span": True})


class _Loader(yaml.SafeLoader):
    """YAML without YAML 1.1's octal, sexagesimal and leading-zero integers.

    ARC task ids are hex strings, and some are all digits: plain YAML reads `00576224` as the octal number 195732,
    losing the id. Here only plain decimal integers are numbers; everything else that looks numeric stays text."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:int"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$"), list("-+0123456789"))


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects


# ---------------------------------------------------------------------------------------------------------------
# Schema. Defaults are SEAL's published constants unless a comment says otherwise.
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    spec: str = "smollm2-135m"  # hub id, local folder, `tiny` or `smollm2-135m`
    cache_dir: str | None = None  # None: $SEAL_CACHE or ~/.cache/seal


@dataclass(frozen=True)
class LoraConfig:
    rank: int = at_least(1, _LORA.rank)
    alpha: int = at_least(1, int(_LORA.alpha))
    dropout: float = bounded(_LORA.dropout, ge=0, lt=1)
    targets: tuple[str, ...] = bounded(_LORA.targets, min_items=1)


@dataclass(frozen=True)
class TrainConfig:
    """The inner loop's training settings (`ttt.settings.TrainSettings`) under their config names."""

    learning_rate: float = bounded(_TRAIN.lr, gt=0)
    epochs: int = at_least(0, _TRAIN.epochs)  # 0: no training, what SEAL's step cap also gives
    batch_size: int = at_least(1, _TRAIN.batch_size)
    grad_accum: int = at_least(1, _TRAIN.grad_accum)
    warmup_steps: int = at_least(0, _TRAIN.warmup_steps)
    schedule: Literal["cosine", "linear", "constant"] = _TRAIN.lr_schedule  # type: ignore[assignment]
    # SEAL: more optimizer steps than this → the update is skipped
    max_steps_cap: int | None = at_least(0, _TRAIN.max_steps_cap)
    weight_decay: float = at_least(0, _TRAIN.weight_decay)
    grad_checkpointing: bool = _TRAIN.grad_checkpointing
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = _TRAIN.dtype  # type: ignore[assignment]
    max_len: int = at_least(2, _TRAIN.max_len)  # tokens per training example
    loss: Literal["output_tokens", "all_tokens"] = "output_tokens"
    # HF Trainer's default, which SEAL inherits; null: no clipping
    max_grad_norm: float | None = bounded(_TRAIN.max_grad_norm, gt=0)
    packing: Literal["auto", "packed", "sequential"] = _TRAIN.packing  # type: ignore[assignment]


@dataclass(frozen=True)
class ArcConfig:
    source: str = "arcagi"  # `arcagi` (ARC-AGI-1), `arcagi2`, a Kaggle challenges JSON, or a folder of task files
    solutions: str | None = None  # Kaggle-style solutions JSON that goes with `source`
    split: Literal["training", "evaluation", "both"] = "evaluation"
    subset: str | None = "seal-eval-1b"  # a named id list (data/arc), or None for the whole split
    task_ids: tuple[str, ...] = ()  # explicit ids; overrides `subset` when non-empty


@dataclass(frozen=True)
class TttDataConfig:
    leave_n: tuple[int, ...] = bounded((1, 2), ge=1, min_items=1)
    basic: bool = True
    size: bool = True
    chain: bool = True
    repeat: bool = True
    permute_n: int = at_least(0, 1)
    nmax: int = at_least(1, 250)
    max_tokens: int = at_least(1, 8192)
    grid_format: Literal["nested", "numpy", "digits"] = "nested"  # numpy: SEAL's literal str(np.array) text
    demo_placement: Literal["user", "system"] = "user"  # system: SEAL's exact layout (demos in the system turn)
    keep_zero_color: bool = True
    fixed_seed: int | None = at_least(0, None)  # None: a seed per unit; 0 reproduces SEAL's one seed for every task


@dataclass(frozen=True)
class InferConfig:
    max_new_tokens: int = at_least(1, 1024)
    # demo subsets: leave this many demos out of each query
    leave_out: tuple[int, ...] = bounded((1,), ge=0, min_items=1)
    permutations_per_subset: int = at_least(0, 2)
    queries_per_transform: int = at_least(0, 1)
    transforms: tuple[str, ...] = ("transpose", "flip0", "flip1", "rot90", "rot180")
    vote: Literal["hierarchical", "majority"] = "hierarchical"
    batch_size: int = at_least(1, 16)  # prompts per generate call
    max_tokens: int = at_least(1, 8192)  # prompt + gold output budget per view
    # hf: generate in process with the adapter in memory. vllm (GPU only): one engine beside the training model;
    # each task's adapter is saved and sent as a LoRA request. dtype and max_lora_rank follow train.dtype and
    # lora.rank; the engine takes this share of GPU memory, the rest stays for training.
    backend: Literal["hf", "vllm"] = "hf"
    vllm_gpu_memory_utilization: float = bounded(0.45, gt=0, le=1)


@dataclass(frozen=True)
class SelftestConfig:
    """The built-in `selftest` stage: units doing real but cheap work (PBKDF2), for checking the machinery."""

    units: int = at_least(1, 300)
    iterations: int = at_least(1, 20000)
    fail_units: tuple[str, ...] = ()  # these units raise (an infrastructure failure: an `error` record, retried)
    artifact_kib: int = at_least(0, 0)  # each unit also saves an artifact this large (exercises sync and pulls)


@dataclass(frozen=True)
class SealConfig:
    """The SEAL outer loop (seal-reference §A3, §A7): sample self-edits, apply and reward each, clone the good ones."""

    # RL iterations; raising it on a finished run continues the run (not part of its identity)
    iterations: int = at_least(1, 1)
    evaluate_final: bool = True  # also sample and evaluate self-edits of the last iteration's model
    self_edits: int = at_least(1, 5)  # k per group (SEAL: 15 on the ARC training subset, 5 on evaluation)
    temperature: float = bounded(0.8, gt=0)  # self-edits are sampled: greedy decoding gives k identical ones
    top_p: float = bounded(1.0, gt=0, le=1)
    max_new_tokens: int = at_least(1, 128)
    # samples drawn per group at most; None: 3 x self_edits (SEAL: unbounded)
    max_attempts: int | None = at_least(1, None)
    dedupe: bool = False  # a self-edit identical to an earlier one of its group is rejected as a duplicate
    # free: sample the reply as text and parse it (SEAL). template: the domain's reply skeleton is written for the
    # model and it samples each value (seal/structured.py): what lets a 135M model write usable self-edits.
    decoding: Literal["free", "template"] = "free"
    # A rejected self-edit: `reward0` records it as invalid with reward 0; `train_zero_epochs` is SEAL's rule
    # (trained 0 epochs, i.e. scored like the base model).
    invalid: Literal["reward0", "train_zero_epochs"] = "reward0"
    # Behaviour-cloning data: every rewarded (group, k) (SEAL ARC), the best per group, or reward >= threshold.
    select: Literal["rewarded", "top1", "threshold"] = "rewarded"
    threshold: float = 1.0


@dataclass(frozen=True)
class RestemConfig:
    """Behaviour cloning on the selected self-edits (SEAL ARC §A7). dtype and checkpointing come from `train`."""

    lora: LoraConfig = field(default_factory=lambda: LoraConfig(rank=16, alpha=16))
    learning_rate: float = bounded(5e-5, gt=0)
    epochs: int = at_least(1, 8)
    batch_size: int = at_least(1, 5)
    grad_accum: int = at_least(1, 1)
    warmup_steps: int = at_least(0, 0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    max_len: int = at_least(2, 8192)  # longer rows are dropped and counted
    # checkpoints are spaced so that saving costs at most this share of training
    save_overhead: float = bounded(0.10, gt=0, lt=1)
    save_every_steps: int | None = at_least(1, None)  # a fixed checkpoint interval instead (tests, benchmarks)


@dataclass(frozen=True)
class ControlsConfig:
    """Controls reported beside the self-edit conditions, on the same tasks (in-context raw is always there)."""

    format_matched: bool = True  # in-context with the answer's grid opening prefilled
    oracle: bool = True  # TTT with the fixed recipe of `train` / `ttt_data`
    wrong_task: bool = True  # the oracle recipe trained on another task's demos


@dataclass(frozen=True)
class PassageTrainConfig:
    """The knowledge inner loop's optimizer settings (SEAL §B4: 10 epochs, lr 1e-3, batch 1, linear, no warmup, none
    of ARC's step cap). dtype, checkpointing and the length limit come from `train` (the platform profile)."""

    learning_rate: float = bounded(1e-3, gt=0)
    epochs: int = at_least(0, 10)  # 0: no update, as TrainSettings allows
    batch_size: int = at_least(1, 1)
    grad_accum: int = at_least(1, 1)
    warmup_steps: int = at_least(0, 0)
    schedule: Literal["cosine", "linear", "constant"] = "linear"
    max_grad_norm: float | None = bounded(1.0, gt=0)  # HF Trainer's default, which SEAL inherits


@dataclass(frozen=True)
class KnowledgeConfig:
    """Knowledge incorporation from passages (seal-reference §B): data, self-edit prompt, inner loop, reward."""

    # A JSON file in SEAL's SQuAD layout, a folder holding passages.json, or `hub:<dataset>[:<split>]` (SQuAD by
    # paragraph through `datasets`, when a hub answers). Relative paths: from the working directory, then the repo.
    source: str = "data/knowledge"
    shuffle_seed: int | None = at_least(0, 42)  # SEAL's subset rule: shuffle with seed 42, then slice; null: file order
    train_passages: tuple[int, ...] = span((200, 250))  # [start, end) of the shuffled passages RL iteration 0 trains on
    new_train_each_iteration: bool = True  # iteration i trains on the slice shifted by i x its length (SEAL)
    # [start, end) of the shuffled passages the final model and the controls are evaluated on (SEAL: the first 200);
    # null: the training passages
    eval_passages: tuple[int, ...] | None = span((0, 200))
    prompt: Literal["implications", "implications-long", "implications-very-long", "rewrite", "self-qa"] = (
        "implications"
    )
    style: Literal["auto", "completion", "chat"] = "auto"  # auto: chat when the tokenizer has a chat template
    include_passage: bool = True  # the passage itself is the last training sequence (SEAL)
    split_newlines: bool = True  # one training sequence per line / question-answer pair (SEAL)
    loss_start: str | None = None  # null: loss on the whole sequence; else only after this substring
    rounds: int = at_least(1, 3)  # independent TTT rounds per self-edit, rewards averaged (SEAL ranking: 3)
    answer_max_new_tokens: int = at_least(1, 64)
    # What makes an answer correct: the judge, or a deterministic metric; auto: the judge when one is configured,
    # else `contains` (the gold answer appears in the answer, normalised).
    correct: Literal["auto", "judge", "contains", "em"] = "auto"
    # accuracy: post-update accuracy (SEAL); gain: accuracy minus the unadapted model's; nll: decrease of the mean
    # gold-answer NLL per token (judge-free and the most sensitive signal at small scale).
    reward: Literal["accuracy", "gain", "nll"] = "accuracy"
    lora: LoraConfig = field(
        default_factory=lambda: LoraConfig(rank=32, alpha=64, dropout=0.0, targets=("q_proj", "v_proj"))
    )
    train: PassageTrainConfig = field(default_factory=PassageTrainConfig)
    # Controls on the evaluation passages with iteration 0's model: the passage alone as training data, and the
    # passage repeated as many times as a self-edit has sequences (the same number of steps, no new content).
    passage_only: bool = True
    passage_repeated: bool = True


@dataclass(frozen=True)
class JudgeConfig:
    """Who decides whether an answer is right (grading package). Unscored answers are never counted wrong."""

    # null: deterministic metrics only. `deferred`: the run exports a bundle, `seal grade` grades it on a machine
    # with Ollama, `seal grade import` brings the verdicts back, and the run continues. Else a judge spec as
    # `seal grade --judge` takes it: ollama:<model>, openai-compat:<base_url>#<model>, hf:<model>.
    spec: str | None = None
    host: str | None = None  # Ollama host; null: $OLLAMA_HOST or http://127.0.0.1:11434
    rubric: str = "seal-yesno"
    concurrency: int = at_least(1, 1)
    timeout_s: float = bounded(120.0, gt=0)
    retries: int = at_least(1, 5)


@dataclass(frozen=True)
class CptConfig:
    """Continued pretraining on many passages (seal-reference §B7): every passage's sequences in one update."""

    passages: tuple[int, ...] = span((0, 200))  # [start, end) of the shuffled passages
    self_edits: int = at_least(1, 1)  # completions per passage whose sequences go into the update (SEAL: k)
    lora: LoraConfig = field(
        default_factory=lambda: LoraConfig(rank=32, alpha=64, dropout=0.0, targets=("q_proj", "v_proj"))
    )
    train: PassageTrainConfig = field(default_factory=lambda: PassageTrainConfig(epochs=3, batch_size=4, grad_accum=2))


@dataclass(frozen=True)
class ContinualConfig:
    """Continual self-edits (seal-reference §B8): K passages in sequence, each update folded into the weights."""

    passages_per_sequence: int = at_least(1, 8)  # K
    sequences: int = at_least(1, 5)  # independent sequences (runs) averaged into the matrix
    start: int = at_least(0, 0)  # first shuffled passage used; sequence r takes [start + r*K, start + (r+1)*K)


@dataclass(frozen=True)
class RunConfig:
    seed: int = at_least(0, 0)
    keep_adapters: bool = False
    claim_timeout_s: float = bounded(900.0, gt=0)  # a claim whose heartbeat is older than this is taken over
    # A unit that runs out of memory is retried this many times, each time smaller (batch, then context).
    oom_retries: int = at_least(0, 3)
    memory_check: bool = True  # refuse to start a run whose memory plan (`seal plan`) does not fit
    # None: the profile's GPU (t4 15, l4 22, a100 40/80) or this machine's RAM
    memory_budget_gib: float | None = bounded(None, gt=0)
    # Where units run (none of these change a result): `local` in this process, or `ray` as tasks of Ray actors,
    # one actor per concurrent slot (runners/ray_executor.py). `ray_address`: an existing cluster ("auto",
    # "HOST:PORT"); None starts a local instance that lives as long as the command.
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    ray_cpus_per_unit: float = at_least(0.01, 1.0)  # also each unit's torch thread count (rounded, at least 1)
    ray_gpus_per_unit: float = at_least(0, 0.0)  # GPU profiles: 1; a fraction (0.5) packs small models, no isolation
    ray_workers: int = at_least(0, 0)  # concurrent units; 0: as many as the cluster's CPUs/GPUs allow
    # A copy of the run pushed in the background after every unit (s3://, gs://, a mounted folder: runners/sync.py);
    # at the end the command waits up to sync_wait_s for the last push (what is not pushed stays local and safe).
    sync_to: str | None = None
    sync_wait_s: float = at_least(0, 600.0)


@dataclass(frozen=True)
class Config:
    experiment: str = "default"
    pipeline: str = "selftest"
    profile: str = "cpu"
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    arc: ArcConfig = field(default_factory=ArcConfig)
    ttt_data: TttDataConfig = field(default_factory=TttDataConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    selftest: SelftestConfig = field(default_factory=SelftestConfig)
    seal: SealConfig = field(default_factory=SealConfig)
    restem: RestemConfig = field(default_factory=RestemConfig)
    controls: ControlsConfig = field(default_factory=ControlsConfig)
    knowledge: KnowledgeConfig = field(default_factory=KnowledgeConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    cpt: CptConfig = field(default_factory=CptConfig)
    continual: ContinualConfig = field(default_factory=ContinualConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    def hash(self) -> str:
        return config_hash(self)


PROFILES = ("cpu", "t4", "l4", "a100-40", "a100-80")


# ---------------------------------------------------------------------------------------------------------------
# Locating files
# ---------------------------------------------------------------------------------------------------------------


def configs_dir() -> Path:
    """`$SEAL_CONFIGS`, else the repository's `configs/` (next to the packages), else `./configs`."""
    env = os.environ.get("SEAL_CONFIGS")
    if env:
        return Path(env)
    beside_package = Path(__file__).resolve().parent.parent / "configs"
    return beside_package if beside_package.is_dir() else Path.cwd() / "configs"


def _yaml_file(kind: str, name: str) -> Path:
    """Resolve an experiment or platform name (or a direct path to a YAML file)."""
    direct = Path(name)
    if direct.suffix in (".yaml", ".yml"):
        if direct.is_file():
            return direct
        raise ConfigError(f"config file not found: {direct}")
    folder = configs_dir() / kind
    path = folder / f"{name}.yaml"
    if path.is_file():
        return path
    existing = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
    hint = f"; available: {', '.join(existing)}" if existing else f" (folder {folder} has no YAML files)"
    if direct.is_file():  # only a .yaml/.yml name is read as a path; any other name is looked up in the folder
        raise ConfigError(
            f"{direct} exists, but {kind[:-1]} configs are .yaml or .yml files: rename it to "
            f"{direct.name}.yaml, or name a config in {folder}{hint}"
        )
    near = difflib.get_close_matches(name, existing, n=1)
    did_you_mean = f"; did you mean '{near[0]}'?" if near else ""
    raise ConfigError(f"no {kind[:-1]} config '{name}': {path} does not exist{did_you_mean}{hint}")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = _yaml_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


# ---------------------------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------------------------


def load_config(
    experiment: str | None = None,
    profile: str | None = "cpu",
    overrides: typing.Sequence[str] = (),
) -> Config:
    """Merge the layers and validate. `profile=None` applies no platform layer."""
    merged: dict[str, Any] = {}
    if profile:
        path = _yaml_file("platforms", profile)
        _deep_merge(merged, _read_yaml(path), str(path))
    if experiment:
        _deep_merge(merged, _experiment_layers(experiment), experiment)
        merged.setdefault("experiment", Path(experiment).stem)
    if profile:
        merged["profile"] = Path(profile).stem
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(merged, key, value)
    return build_config(merged)


def _experiment_layers(name: str, chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """An experiment's YAML on top of the one it names in `extends:` (recursively), so a family of experiments
    (the knowledge demo, its reproduction) writes down only what differs from its base."""
    path = _yaml_file("experiments", name)
    if str(path.resolve()) in chain:
        cycle = " -> ".join([*(Path(c).stem for c in chain), path.stem])
        raise ConfigError(f"{path}: 'extends' forms a cycle: {cycle}")
    data = _read_yaml(path)
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: 'extends' must name another experiment config, got {base!r}")
    merged = _experiment_layers(base, (*chain, str(path.resolve())))
    _deep_merge(merged, data, str(path))
    return merged


def parse_override(item: str) -> tuple[str, Any]:
    """`a.b=c` → ("a.b", parsed YAML scalar or list)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.learning_rate=2e-4")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item!r}: the key before '=' is empty")
    try:
        value = _yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def build_config(data: dict[str, Any]) -> Config:
    return build_dataclass(Config, data)


def build_dataclass(cls: type, data: dict[str, Any], base: Any = None) -> Any:
    """Validate `data` into the frozen dataclass `cls`, on top of `base` (an instance) when given. Nested sections
    start from the parent field's default, not the section class's own defaults."""
    return _build(cls, data, prefix="", base=base)


def _deep_merge(into: dict[str, Any], layer: dict[str, Any], source: str) -> None:
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value, source)
        else:
            into[key] = value


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    keys: list[str] = []
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}{f.name}"
        keys.append(dotted)
        field_type = typing.get_type_hints(cls)[f.name]
        if isinstance(field_type, type) and dataclasses.is_dataclass(field_type):
            keys.extend(_all_keys(field_type, dotted + "."))
    return keys


def _field_default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _build(cls: type, data: Any, prefix: str, base: Any = None) -> Any:
    where = prefix.rstrip(".") or "the config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {data!r} ({type(data).__name__})")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            dotted = f"{prefix}{key}"
            near = difflib.get_close_matches(dotted, _all_keys(Config), n=1, cutoff=0.6)
            if not near:
                near = [prefix + m for m in difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)]
            suggestion = f"; did you mean '{near[0]}'?" if near else ""
            raise ConfigError(f"unknown config key '{dotted}'{suggestion} (valid keys in {where}: {', '.join(fields)})")
    kwargs = {}
    for name in fields:
        if name not in data:
            continue
        tp = hints[name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            # A section set only in part keeps the rest of its parent's default (e.g. a default_factory that
            # builds the section with non-class defaults), not the section class's own defaults.
            parent = getattr(base, name) if base is not None else _field_default(fields[name])
            kwargs[name] = _build(tp, data[name], f"{prefix}{name}.", base=parent if isinstance(parent, tp) else None)
        else:
            kwargs[name] = _coerce(tp, data[name], f"{prefix}{name}")
            _check_bounds(f"{prefix}{name}", kwargs[name], fields[name].metadata)
    return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)


def _check_bounds(key: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    """The range that `bounded`, `at_least` and `span` put in a field's metadata; None is never out of range."""
    if isinstance(value, float) and not math.isfinite(value):  # `.nan`, `.inf`: NaN passes every comparison
        raise ConfigError(f"config key '{key}': {value!r} is not a finite number; give a finite float")
    if value is None or not meta:
        return
    if meta.get("span"):
        if len(value) != 2 or not 0 <= value[0] < value[1]:
            raise ConfigError(f"config key '{key}': expected [start, end) with 0 <= start < end, got {list(value)}")
        return
    if isinstance(value, tuple):
        least = meta.get("min_items", 0)
        if len(value) < least:
            raise ConfigError(f"config key '{key}': needs at least {least} item(s), got {list(value)}")
        for i, item in enumerate(value):
            _check_bounds(f"{key}[{i}]", item, {k: v for k, v in meta.items() if k != "min_items"})
        return
    if "min" in meta and value < meta["min"]:
        raise ConfigError(f"config key '{key}': {value!r} is below its minimum, {meta['min']}")
    if "gt" in meta and not value > meta["gt"]:
        raise ConfigError(f"config key '{key}': {value!r} is not above its minimum, {meta['gt']} (it must be greater)")
    if "max" in meta and value > meta["max"]:
        raise ConfigError(f"config key '{key}': {value!r} is above its maximum, {meta['max']}")
    if "lt" in meta and not value < meta["lt"]:
        raise ConfigError(f"config key '{key}': {value!r} is not below its maximum, {meta['lt']} (it must be less)")


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; convert only where the conversion is lossless and obvious."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key)
            except ConfigError:
                continue
        raise ConfigError(_type_error(key, value, _type_name(tp)))
    if origin is Literal:
        if value in args:
            return value
        choices = ", ".join(repr(a) for a in args)
        raise ConfigError(f"config key '{key}': {value!r} is not allowed; choose one of {choices}")
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(_type_error(key, value, _type_name(tp)))
        item_type = args[0]
        return tuple(_coerce(item_type, item, f"{key}[{i}]") for i, item in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(_type_error(key, value, "bool (true/false)"))
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(_type_error(key, value, "int"))
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads `1e-4` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(_type_error(key, value, "float"))
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            # An all-digit id (ARC's 59341089): the loader reads only plain decimals as numbers, so the text is exact.
            return str(value)
        raise ConfigError(_type_error(key, value, "str"))
    raise ConfigError(f"config key '{key}': unsupported type {tp!r} in the schema")  # a bug in the schema


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _type_error(key: str, value: Any, expected: str) -> str:
    message = f"config key '{key}': expected {expected}, got {value!r} ({type(value).__name__})"
    if isinstance(value, dict) and "str" in expected.split(" or "):
        # `--set judge.host=a::b`: YAML reads a colon in a plain value as a mapping.
        message += (
            f"; YAML read the value as a mapping because of its ':': quote it, e.g. --set '{key}=\"...\"' "
            "(or put it in quotes in the YAML file)"
        )
    return message


# ---------------------------------------------------------------------------------------------------------------
# Canonical form and hash
# ---------------------------------------------------------------------------------------------------------------


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(x) for x in obj]
    return obj


def canonical_json(cfg: Config) -> str:
    return json.dumps(cfg.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def config_hash(cfg: Config) -> str:
    """sha256 of the canonical JSON, shortened; equal configs hash equal whatever the YAML layout was."""
    return hashlib.sha256(canonical_json(cfg).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------------
# Run identity: what of the config makes a run what it is
# ---------------------------------------------------------------------------------------------------------------

# Keys that never change a run's results; a pipeline without CONFIG_SECTIONS is identified by all the others.
_NOT_IDENTITY = ("experiment", "profile")
# Keys that decide where and how units run, never what they compute: no run's identity includes them, so a run can
# move between machines, executors and memory budgets and still resume.
OPERATIONAL_KEYS = (
    "model.cache_dir",
    "run.claim_timeout_s",
    "run.oom_retries",
    "run.executor",
    "run.ray_address",
    "run.ray_cpus_per_unit",
    "run.ray_gpus_per_unit",
    "run.ray_workers",
    "run.memory_check",
    "run.memory_budget_gib",
    "run.sync_to",
    "run.sync_wait_s",
)


def _identity(full: dict[str, Any], sections: typing.Sequence[str] | None, exclude: typing.Sequence[str]) -> dict:
    keep = list(sections) if sections is not None else [k for k in full if k not in _NOT_IDENTITY]
    out: dict[str, Any] = {"pipeline": full.get("pipeline")}
    for key in keep:
        if key in full:
            out[key] = json.loads(json.dumps(full[key]))  # a deep copy of plain data
    for dotted in (*OPERATIONAL_KEYS, *exclude):
        *parents, leaf = dotted.split(".")
        node: Any = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return out


def config_identity(cfg: Any, sections: typing.Sequence[str] | None = None, exclude: typing.Sequence[str] = ()) -> dict:
    """The pipeline name and the top-level sections the pipeline reads, less `exclude` (dotted keys that do not
    change a run, e.g. an iteration count that a finished run may be continued to). `sections=None`: every
    section."""
    return _identity(_to_plain(cfg), sections, exclude)


def identity_hash(cfg: Any, sections: typing.Sequence[str] | None = None, exclude: typing.Sequence[str] = ()) -> str:
    """The run's hash: sha256 of the canonical JSON of `config_identity`, shortened."""
    text = json.dumps(config_identity(cfg, sections, exclude), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def identity_changes(
    stored: dict[str, Any],
    cfg: Any,
    sections: typing.Sequence[str] | None = None,
    exclude: typing.Sequence[str] = (),
) -> list[str]:
    """The differences that refuse a resume: `stored` (a manifest's config) against `cfg`, restricted to the
    identity. A key the stored config lacks counts only if its new value differs from the schema default, so a
    schema that grows never invalidates an existing run; a key the schema dropped is no longer read."""
    old = _identity(stored, sections, exclude)
    new = config_identity(cfg, sections, exclude)
    defaults = config_identity(type(cfg)(), sections, exclude)
    return _identity_diff(old, new, defaults, "")


def _identity_diff(old: dict[str, Any], new: dict[str, Any], defaults: Any, prefix: str) -> list[str]:
    lines: list[str] = []
    for key in sorted(new):
        dotted, b = f"{prefix}{key}", new[key]
        default = defaults.get(key) if isinstance(defaults, dict) else None
        if key not in old:
            if isinstance(b, dict):
                lines.extend(_identity_diff({}, b, default, dotted + "."))
            elif b != default:
                lines.append(f"{dotted}: <absent> → {json.dumps(b)}")
            continue
        a = old[key]
        if isinstance(a, dict) and isinstance(b, dict):
            lines.extend(_identity_diff(a, b, default, dotted + "."))
        elif a != b:
            lines.append(f"{dotted}: {json.dumps(a)} → {json.dumps(b)}")
    return lines


def diff_configs(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Readable lines `key: old → new` for every leaf that differs."""
    lines: list[str] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        dotted = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            lines.extend(diff_configs(a, b, dotted + "."))
        elif a != b:
            lines.append(f"{dotted}: {json.dumps(a)} → {json.dumps(b)}")
    return lines


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)
