"""Config layers, validation messages and the canonical hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from runners.config import ConfigError, build_config, config_hash, load_config


def test_layers_apply_in_order_profile_then_experiment_then_set() -> None:
    cfg = load_config("arc_ttt_oracle", "t4", ["lora.rank=8", "train.learning_rate=2e-4"])
    assert cfg.pipeline == "arc_ttt" and cfg.experiment == "arc_ttt_oracle" and cfg.profile == "t4"
    assert cfg.train.dtype == "fp16"  # from the t4 profile
    assert cfg.lora.rank == 8  # --set beats the profile's 32
    assert cfg.train.learning_rate == pytest.approx(2e-4)
    assert cfg.train.epochs == 2  # from the experiment
    assert load_config("arc_ttt_oracle", "t4").lora.rank == 32  # the experiment leaves rank to the profile


def test_what_an_experiment_writes_down_beats_the_profile() -> None:
    for profile in ("cpu", "t4", "a100-80"):
        demo = load_config("demo_arc", profile)
        assert (demo.lora.rank, demo.ttt_data.max_tokens, demo.infer.max_tokens) == (8, 1024, 1024)
        assert demo.train.dtype == load_config(None, profile).train.dtype  # hardware keys still come from it


def test_the_oracle_experiment_is_seals_recipe() -> None:
    cfg = load_config("arc_ttt_oracle", "a100-80")
    assert cfg.train.learning_rate == pytest.approx(1e-4) and cfg.train.epochs == 2
    assert cfg.train.loss == "output_tokens"
    assert (cfg.ttt_data.basic, cfg.ttt_data.size, cfg.ttt_data.chain, cfg.ttt_data.repeat) == (True,) * 4
    assert cfg.lora.rank == 128 and cfg.model.spec == "meta-llama/Llama-3.2-1B-Instruct"


def test_config_is_frozen() -> None:
    cfg = load_config("selftest", "cpu")
    with pytest.raises(AttributeError):
        cfg.train.epochs = 3  # type: ignore[misc]


def test_unknown_key_names_key_and_nearest_valid_key() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("selftest", "cpu", ["train.learing_rate=1e-3"])
    assert "train.learing_rate" in str(err.value) and "did you mean 'train.learning_rate'" in str(err.value)
    with pytest.raises(ConfigError, match="unknown config key 'trian'.*did you mean 'train'"):
        build_config({"trian": {}})


def test_wrong_type_names_key_value_and_expected_type() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("selftest", "cpu", ["train.epochs=two"])
    message = str(err.value)
    assert "train.epochs" in message and "'two'" in message and "int" in message
    with pytest.raises(ConfigError, match="train.grad_checkpointing.*bool"):
        build_config({"train": {"grad_checkpointing": "yes please"}})
    with pytest.raises(ConfigError, match="train.dtype.*'fp8'.*choose one of"):
        build_config({"train": {"dtype": "fp8"}})


def test_missing_file_names_path_and_lists_existing() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("no_such_experiment", "cpu")
    assert "no_such_experiment.yaml" in str(err.value) and "selftest" in str(err.value)
    with pytest.raises(ConfigError, match="t4"):
        load_config("selftest", "t5")


def test_yaml_path_and_bad_yaml(tmp_path: Path) -> None:
    good = tmp_path / "exp.yaml"
    good.write_text("pipeline: selftest\nselftest: {units: 7}\n")
    assert load_config(str(good), None).selftest.units == 7
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(str(bad), None)


def test_an_existing_file_without_the_yaml_suffix_is_named_as_such(tmp_path: Path) -> None:
    plain = tmp_path / "afile"
    plain.write_text("pipeline: selftest\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(plain), None)
    message = str(err.value)
    assert f"{plain} exists" in message and ".yaml or .yml" in message and "afile.yaml" in message
    assert "does not exist" not in message and "selftest" in message  # what exists is still listed
    assert load_config("selftest", None).pipeline == "selftest"  # names without a suffix still resolve in configs/


def test_hash_is_canonical_and_sensitive() -> None:
    a = build_config({"train": {"epochs": 3}, "lora": {"rank": 8}})
    b = build_config({"lora": {"rank": 8}, "train": {"epochs": 3}})
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(build_config({"train": {"epochs": 4}, "lora": {"rank": 8}}))


def test_every_shipped_profile_and_experiment_validates() -> None:
    root = Path(__file__).resolve().parents[3] / "configs"
    for profile in (root / "platforms").glob("*.yaml"):
        for experiment in (root / "experiments").glob("*.yaml"):
            load_config(experiment.stem, profile.stem)


def test_all_digit_task_ids_stay_text_in_overrides() -> None:
    # ARC's 00576224 is all digits (and all octal digits): plain YAML would turn it into 195732.
    cfg = load_config("demo_arc", "cpu", ["arc.task_ids=[00576224, 66e6c45b]", "train.learning_rate=1e-4"])
    assert cfg.arc.task_ids == ("00576224", "66e6c45b")
    assert cfg.train.learning_rate == pytest.approx(1e-4)
    assert load_config("demo_arc", "cpu", ["train.epochs=3"]).train.epochs == 3


def test_every_inner_loop_setting_is_reachable_from_the_config_with_the_same_default() -> None:
    """The config sections mirror ttt's settings dataclasses; this keeps the mirror whole: every setting can be set
    (except the per-unit seed, which the pipeline derives) and an untouched config gives ttt's own defaults."""
    import dataclasses

    from runners.config import build_config
    from runners.pipelines.arc_ttt import recipe_from_config
    from ttt.arc import TTTDataSettings, ViewSettings
    from ttt.arc_ttt import TaskRecipe
    from ttt.lora import LoraSettings
    from ttt.train import TrainSettings

    recipe = recipe_from_config(build_config({}))
    assert recipe.train == TrainSettings()
    assert recipe.data == TTTDataSettings()
    assert recipe.views == ViewSettings(grid_format=recipe.data.grid_format)
    assert (recipe.loss, recipe.vote, recipe.max_new_tokens) == (TaskRecipe().loss, TaskRecipe().vote, 1024)
    cfg = build_config({})
    assert LoraSettings(rank=cfg.lora.rank, alpha=cfg.lora.alpha, targets=cfg.lora.targets) == LoraSettings()
    # Each TrainSettings field is moved by some config key: change every key at once and compare.
    changed = build_config({"train": {"learning_rate": 3e-4, "epochs": 5, "batch_size": 3, "grad_accum": 2,
        "warmup_steps": 1, "schedule": "linear", "max_steps_cap": 99, "weight_decay": 0.1, "grad_checkpointing": True,
        "dtype": "bf16", "max_len": 100, "max_grad_norm": None, "packing": "sequential"}})  # fmt: skip
    moved = recipe_from_config(changed).train
    unmoved = [
        f.name for f in dataclasses.fields(TrainSettings) if getattr(moved, f.name) == getattr(TrainSettings(), f.name)
    ]
    assert unmoved == ["seed"]


def test_restem_defaults_are_the_behaviour_cloning_trainers_defaults() -> None:
    from runners.config import build_config
    from ttt.sft import SftSettings

    r, sft = build_config({}).restem, SftSettings()
    ours = (r.lora.rank, r.lora.alpha, r.lora.dropout, r.lora.targets, r.epochs, r.batch_size, r.grad_accum,
            r.learning_rate, r.schedule, r.warmup_steps, r.max_len, r.save_overhead, r.save_every_steps)  # fmt: skip
    theirs = (sft.rank, sft.alpha, sft.dropout, sft.targets, sft.epochs, sft.batch_size, sft.grad_accum, sft.lr,
              sft.schedule, sft.warmup_steps, sft.max_len, sft.save_overhead, sft.save_every_steps)  # fmt: skip
    assert ours == theirs


def test_an_experiment_extends_another_and_a_cycle_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    demo = load_config("demo", "cpu")
    assert demo.pipeline == "knowledge_seal" and demo.restem.lora.rank == 8  # its own value
    assert demo.restem.lora.targets[-1] == "down_proj" and demo.seal.top_p == 0.95  # from knowledge_seal
    (tmp_path / "experiments").mkdir()
    (tmp_path / "platforms").mkdir()
    (tmp_path / "experiments" / "a.yaml").write_text("extends: b\n")
    (tmp_path / "experiments" / "b.yaml").write_text("extends: a\n")
    monkeypatch.setenv("SEAL_CONFIGS", str(tmp_path))
    with pytest.raises(ConfigError, match="cycle"):
        load_config("a", None)


def test_a_set_value_yaml_read_as_a_mapping_says_to_quote_it() -> None:
    with pytest.raises(ConfigError, match=r"read the value as a mapping.*quote it, e.g. --set 'judge.host="):
        load_config("arc_ttt_oracle", "t4", ["judge.host=notaurl::::"])
    assert load_config("arc_ttt_oracle", "t4", ['judge.host="notaurl::::"']).judge.host == "notaurl::::"
