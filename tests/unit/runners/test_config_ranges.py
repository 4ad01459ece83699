"""Every number in the config has the range the code that uses it needs, checked when the config is built: a value
that cannot run is refused there (naming its key), never by a worker after the run directory has its manifest."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from runners.config import Config, ConfigError, load_config


def _load(*sets: str) -> Config:
    return load_config(None, None, sets)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("lora.rank=0", "config key 'lora.rank': 0 is below its minimum, 1"),
        ("knowledge.lora.rank=0", "config key 'knowledge.lora.rank': 0 is below its minimum, 1"),
        ("restem.lora.alpha=0", "config key 'restem.lora.alpha': 0 is below its minimum, 1"),
        ("cpt.lora.dropout=1", "config key 'cpt.lora.dropout': 1.0 is not below its maximum, 1"),
        ("lora.targets=[]", "config key 'lora.targets': needs at least 1 item"),
        ("train.learning_rate=0", "config key 'train.learning_rate': 0.0 is not above its minimum, 0"),
        ("train.learning_rate=-1", "config key 'train.learning_rate': -1.0 is not above its minimum, 0"),
        ("train.epochs=-1", "config key 'train.epochs': -1 is below its minimum, 0"),
        ("train.batch_size=0", "config key 'train.batch_size': 0 is below its minimum, 1"),
        ("train.warmup_steps=-1", "config key 'train.warmup_steps': -1 is below its minimum, 0"),
        ("train.max_steps_cap=-1", "config key 'train.max_steps_cap': -1 is below its minimum, 0"),
        ("train.max_len=-5", "config key 'train.max_len': -5 is below its minimum, 2"),
        ("train.max_len=1", "config key 'train.max_len': 1 is below its minimum, 2"),
        ("train.max_grad_norm=0", "config key 'train.max_grad_norm': 0.0 is not above its minimum, 0"),
        ("train.weight_decay=-0.1", "config key 'train.weight_decay': -0.1 is below its minimum, 0"),
        ("ttt_data.leave_n=[1, 0]", "config key 'ttt_data.leave_n[1]': 0 is below its minimum, 1"),
        ("ttt_data.leave_n=[]", "config key 'ttt_data.leave_n': needs at least 1 item"),
        ("ttt_data.nmax=0", "config key 'ttt_data.nmax': 0 is below its minimum, 1"),
        ("ttt_data.fixed_seed=-1", "config key 'ttt_data.fixed_seed': -1 is below its minimum, 0"),
        ("infer.batch_size=0", "config key 'infer.batch_size': 0 is below its minimum, 1"),
        ("infer.max_new_tokens=0", "config key 'infer.max_new_tokens': 0 is below its minimum, 1"),
        ("infer.leave_out=[-1]", "config key 'infer.leave_out[0]': -1 is below its minimum, 0"),
        ("infer.permutations_per_subset=-1", "config key 'infer.permutations_per_subset': -1 is below"),
        ("infer.vllm_gpu_memory_utilization=3", "config key 'infer.vllm_gpu_memory_utilization': 3.0 is above its"),
        ("infer.vllm_gpu_memory_utilization=0", "config key 'infer.vllm_gpu_memory_utilization': 0.0 is not above"),
        ("seal.top_p=5", "config key 'seal.top_p': 5.0 is above its maximum, 1"),
        ("seal.top_p=0", "config key 'seal.top_p': 0.0 is not above its minimum, 0"),
        ("seal.temperature=0", "config key 'seal.temperature': 0.0 is not above its minimum, 0"),
        ("seal.max_new_tokens=0", "config key 'seal.max_new_tokens': 0 is below its minimum, 1"),
        ("seal.max_attempts=0", "config key 'seal.max_attempts': 0 is below its minimum, 1"),
        ("restem.batch_size=0", "config key 'restem.batch_size': 0 is below its minimum, 1"),
        ("restem.epochs=0", "config key 'restem.epochs': 0 is below its minimum, 1"),
        ("restem.learning_rate=-1e-5", "config key 'restem.learning_rate': -1e-05 is not above its minimum, 0"),
        ("restem.save_overhead=1", "config key 'restem.save_overhead': 1.0 is not below its maximum, 1"),
        ("restem.save_every_steps=0", "config key 'restem.save_every_steps': 0 is below its minimum, 1"),
        ("knowledge.train.learning_rate=0", "config key 'knowledge.train.learning_rate': 0.0 is not above"),
        ("knowledge.train.batch_size=0", "config key 'knowledge.train.batch_size': 0 is below its minimum, 1"),
        ("knowledge.rounds=0", "config key 'knowledge.rounds': 0 is below its minimum, 1"),
        ("knowledge.answer_max_new_tokens=0", "config key 'knowledge.answer_max_new_tokens': 0 is below"),
        ("knowledge.shuffle_seed=-1", "config key 'knowledge.shuffle_seed': -1 is below its minimum, 0"),
        ("knowledge.train_passages=[5, 2]", "config key 'knowledge.train_passages': expected [start, end) with 0"),
        ("knowledge.train_passages=[5]", "config key 'knowledge.train_passages': expected [start, end)"),
        ("knowledge.eval_passages=[-1, 3]", "config key 'knowledge.eval_passages': expected [start, end)"),
        ("cpt.passages=[3, 3]", "config key 'cpt.passages': expected [start, end) with 0 <= start < end"),
        ("cpt.self_edits=0", "config key 'cpt.self_edits': 0 is below its minimum, 1"),
        ("continual.sequences=0", "config key 'continual.sequences': 0 is below its minimum, 1"),
        ("continual.start=-1", "config key 'continual.start': -1 is below its minimum, 0"),
        ("judge.timeout_s=0", "config key 'judge.timeout_s': 0.0 is not above its minimum, 0"),
        ("run.seed=-3", "config key 'run.seed': -3 is below its minimum, 0"),
        ("run.claim_timeout_s=0", "config key 'run.claim_timeout_s': 0.0 is not above its minimum, 0"),
        ("run.memory_budget_gib=-1", "config key 'run.memory_budget_gib': -1.0 is not above its minimum, 0"),
    ],
)
def test_a_value_out_of_range_is_refused_naming_the_key(item: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _load(item)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_the_edges_of_each_range_and_null_where_allowed_are_accepted() -> None:
    cfg = _load(
        "lora.rank=1", "lora.alpha=1", "lora.dropout=0", "train.epochs=0", "train.warmup_steps=0",
        "train.max_steps_cap=0", "train.max_len=2", "train.max_grad_norm=null", "infer.leave_out=[0]",
        "infer.vllm_gpu_memory_utilization=1", "seal.top_p=1", "seal.max_attempts=null", "restem.epochs=1",
        "restem.save_every_steps=1", "knowledge.eval_passages=null", "knowledge.train_passages=[0, 1]",
        "knowledge.shuffle_seed=null", "run.memory_budget_gib=null", "run.seed=0", "seal.threshold=-2.5",
    )  # fmt: skip
    assert cfg.lora.rank == 1 and cfg.train.epochs == 0 and cfg.infer.leave_out == (0,)
    assert cfg.knowledge.eval_passages is None and cfg.train.max_grad_norm is None and cfg.seal.threshold == -2.5


def _leaves(cls: type, prefix: str = "") -> typing.Iterator[tuple[str, typing.Any, dataclasses.Field[typing.Any]]]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            yield from _leaves(tp, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", tp, f


def _numeric(tp: typing.Any) -> set[type]:
    """The number types a field holds: int, float, or int items of a tuple (bool is not a number here)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple:
        return _numeric(args[0])
    if args:
        return set().union(*(_numeric(a) for a in args))
    return {tp} & {int, float}


# Numbers that any finite value suits: a reward threshold (nll rewards can be negative).
UNBOUNDED = {"seal.threshold"}


def test_every_numeric_field_of_every_section_has_a_range() -> None:
    numeric = [(key, f) for key, tp, f in _leaves(Config) if _numeric(tp)]
    assert len(numeric) > 60  # the walk reaches the nested sections (restem.lora, knowledge.train, ...)
    missing = [key for key, f in numeric if key not in UNBOUNDED and not f.metadata]
    assert not missing, f"numeric config fields without a range: {missing}"


@pytest.mark.parametrize("text", [".nan", ".inf", "-.inf", "nan", "inf"])
def test_nan_and_infinities_are_refused_in_every_float_field(text: str) -> None:
    floats = [key for key, tp, _ in _leaves(Config) if float in _numeric(tp) and typing.get_origin(tp) is not tuple]
    assert "seal.threshold" in floats and "run.memory_budget_gib" in floats
    for key in floats:
        with pytest.raises(ConfigError, match=rf"config key '{key}': .* is not a finite number"):
            _load(f"{key}={text}")


def test_the_lowest_values_the_schema_accepts_are_accepted_by_the_code_that_uses_them() -> None:
    """The schema and the inner loop's own checks agree: what passes the config also builds the settings."""
    from runners.pipelines import arc_ttt
    from runners.pipelines.knowledge_seal import passage_recipe
    from seal.selfedit import SampleSettings
    from ttt.generate.base import GenerationRequest
    from ttt.settings import LoraSettings
    from ttt.sft import SftSettings

    cfg = _load(
        "lora.rank=1", "lora.alpha=1", "lora.dropout=0", "train.learning_rate=1e-9", "train.epochs=0",
        "train.batch_size=1", "train.grad_accum=1", "train.warmup_steps=0", "train.max_steps_cap=0",
        "train.weight_decay=0", "train.max_len=2", "train.max_grad_norm=1e-9", "ttt_data.leave_n=[1]",
        "ttt_data.permute_n=0", "ttt_data.nmax=1", "ttt_data.max_tokens=1", "ttt_data.fixed_seed=0",
        "infer.leave_out=[0]", "infer.permutations_per_subset=0", "infer.queries_per_transform=0",
        "infer.max_tokens=1", "infer.max_new_tokens=1", "seal.temperature=1e-9", "seal.top_p=1e-9",
        "seal.max_new_tokens=1", "seal.self_edits=1", "seal.max_attempts=1", "restem.lora.rank=1",
        "restem.lora.alpha=1", "restem.learning_rate=1e-9", "restem.epochs=1", "restem.batch_size=1",
        "restem.warmup_steps=0", "restem.max_len=2", "restem.save_overhead=1e-9", "restem.save_every_steps=1",
        "knowledge.train.learning_rate=1e-9", "knowledge.train.epochs=0", "knowledge.train.warmup_steps=0",
        "knowledge.rounds=1",
    )  # fmt: skip
    arc_ttt.recipe_from_config(cfg)
    passage_recipe(cfg, "completion")
    for lora in (cfg.lora, cfg.restem.lora, cfg.knowledge.lora, cfg.cpt.lora):
        LoraSettings(rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout, targets=lora.targets)
    r = cfg.restem
    SftSettings(
        rank=r.lora.rank, alpha=r.lora.alpha, dropout=r.lora.dropout, targets=r.lora.targets, epochs=r.epochs,
        batch_size=r.batch_size, grad_accum=r.grad_accum, lr=r.learning_rate, warmup_steps=r.warmup_steps,
        max_len=r.max_len, save_overhead=r.save_overhead, save_every_steps=r.save_every_steps,
    )  # fmt: skip
    s = cfg.seal
    SampleSettings(s.self_edits, s.temperature, s.top_p, s.max_new_tokens, s.max_attempts)
    GenerationRequest(messages=({"role": "user", "content": "x"},), max_new_tokens=cfg.infer.max_new_tokens)
