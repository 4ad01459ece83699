"""A run's identity is the config sections its pipeline reads; nested sections build on their parent's default."""

from __future__ import annotations

from dataclasses import dataclass, field

from runners.config import build_config, build_dataclass, identity_changes, identity_hash

SECTIONS = ("model", "lora", "train", "run")


def _stored(**overrides: object) -> dict:
    cfg = build_config({"pipeline": "arc_ttt", **overrides}).to_dict()
    return cfg


def test_a_manifest_written_by_an_older_schema_resumes() -> None:
    stored = _stored()
    del stored["lora"]["dropout"]  # the key did not exist when the run started
    del stored["infer"]  # nor did a whole section
    assert identity_changes(stored, build_config({"pipeline": "arc_ttt"}), SECTIONS) == []
    changed = build_config({"pipeline": "arc_ttt", "lora": {"dropout": 0.1}})  # not the default: a real change
    assert identity_changes(stored, changed, SECTIONS) == ["lora.dropout: <absent> → 0.1"]


def test_a_relevant_change_refuses_an_excluded_or_unread_one_does_not() -> None:
    stored = _stored()
    assert identity_changes(stored, build_config({"pipeline": "arc_ttt", "train": {"epochs": 3}}), SECTIONS) == [
        "train.epochs: 2 → 3"
    ]
    epochs = build_config({"pipeline": "arc_ttt", "train": {"epochs": 3}})
    assert identity_changes(stored, epochs, SECTIONS, exclude=("train.epochs",)) == []
    unread = build_config({"pipeline": "arc_ttt", "selftest": {"units": 7}, "experiment": "other", "profile": "t4"})
    assert identity_changes(stored, unread, SECTIONS) == []
    assert identity_changes(stored, build_config({"pipeline": "selftest"}), SECTIONS) == [
        'pipeline: "arc_ttt" → "selftest"'
    ]


def test_identity_hash_covers_only_the_identity() -> None:
    base = build_config({"pipeline": "arc_ttt"})
    assert identity_hash(base, SECTIONS) == identity_hash(
        build_config({"pipeline": "arc_ttt", "infer": {"batch_size": 3}}), SECTIONS
    )
    assert identity_hash(base, SECTIONS) != identity_hash(
        build_config({"pipeline": "arc_ttt", "lora": {"rank": 3}}), SECTIONS
    )
    excluded = build_config({"pipeline": "arc_ttt", "run": {"claim_timeout_s": 5}})
    assert identity_hash(base, SECTIONS, ("run.claim_timeout_s",)) == identity_hash(
        excluded, SECTIONS, ("run.claim_timeout_s",)
    )


@dataclass(frozen=True)
class _Lora:
    rank: int = 128
    alpha: int = 16


@dataclass(frozen=True)
class _Restem:
    lora: _Lora = field(default_factory=lambda: _Lora(rank=16, alpha=16))
    rounds: int = 2


@dataclass(frozen=True)
class _Schema:
    lora: _Lora = field(default_factory=_Lora)
    restem: _Restem = field(default_factory=_Restem)


def test_a_nested_section_set_in_part_keeps_its_parent_fields_default() -> None:
    built = build_dataclass(_Schema, {"restem": {"lora": {"alpha": 32}}})
    assert built.restem.lora == _Lora(rank=16, alpha=32)  # not the class default rank 128
    assert built.restem.rounds == 2 and built.lora == _Lora()
    assert build_dataclass(_Schema, {"restem": {"rounds": 5}}).restem.lora == _Lora(rank=16, alpha=16)
