"""Rough edges a held-out review found: each gets one clear line (what, where, what to do), never a traceback,
and nothing written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from runners.cli import main
from runners.cli.driver import silence_library_progress_bars
from runners.config import ConfigError, load_config


def _invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, list(args))


def test_a_run_directory_that_is_a_file_is_one_clear_line(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "notes.txt"
    not_a_dir.write_text("mine")
    for args in (["selftest", "--run-dir", str(not_a_dir), "--no-progress"], ["export", str(not_a_dir)]):
        result = _invoke(*args)
        assert result.exit_code == 1, result.output
        assert f"{not_a_dir} is a file, not a run directory" in result.output and "Traceback" not in result.output
    assert not_a_dir.read_text() == "mine"


def test_export_of_a_missing_run_creates_nothing(tmp_path: Path) -> None:
    result = _invoke("export", str(tmp_path / "no-such-run"))
    assert result.exit_code == 1 and "no manifest.json here" in result.output
    assert not (tmp_path / "no-such-run").exists()


def test_a_finished_quiet_run_leaves_no_empty_worker_log(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = _invoke("selftest", "--run-dir", str(run_dir), "--no-progress", "--set", "selftest.units=3")
    assert result.exit_code == 0, result.output
    logs = list((run_dir / "logs").glob("worker-*.log")) if (run_dir / "logs").is_dir() else []
    assert all(log.stat().st_size > 0 for log in logs), "an empty worker log was left behind"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("selftest.units=-5", "config key 'selftest.units': -5 is below its minimum, 1"),
        ("seal.self_edits=0", "config key 'seal.self_edits': 0 is below its minimum, 1"),
        ("judge.concurrency=0", "config key 'judge.concurrency': 0 is below its minimum, 1"),
    ],
)
def test_counts_below_their_minimum_are_refused(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config("demo_arc", "cpu", [override])
    assert str(caught.value) == message


def test_all_digit_task_ids_in_a_set_list_stay_ids() -> None:
    cfg = load_config("demo_arc", "cpu", ["arc.task_ids=[66e6c45b,59341089]"])
    assert cfg.arc.task_ids == ("66e6c45b", "59341089")
    assert load_config("demo_arc", "cpu", ["arc.task_ids=[00576224]"]).arc.task_ids == ("00576224",)
    with pytest.raises(ConfigError, match="train.epochs"):  # a number where one belongs is still checked
        load_config("demo_arc", "cpu", ["train.epochs=two"])


def test_a_task_file_without_the_configured_ids_says_which_key_to_clear(tmp_path: Path) -> None:
    challenges = tmp_path / "challenges.json"
    task = {"train": [{"input": [[1, 0]], "output": [[0, 1]]}], "test": [{"input": [[1, 1]]}]}
    challenges.write_text(json.dumps({"mytask01": task}))
    run_dir = tmp_path / "run"
    base = ["ttt", "run", "demo_ttt", "--run-dir", str(run_dir), "--no-progress", "--set", "model.spec=tiny"]
    listed = _invoke(*base, "--set", f"arc.source={challenges}")  # demo_ttt names its two tasks
    assert listed.exit_code == 1 and "Traceback" not in listed.output
    assert "those ids come from arc.task_ids=['66e6c45b', 'c7d4e6ad']" in listed.output
    assert "set arc.task_ids=[] and arc.subset=null to take every task" in listed.output
    subset = _invoke(*base, "--set", f"arc.source={challenges}", "--set", "arc.task_ids=[]")
    assert subset.exit_code == 1 and "those ids come from arc.subset='seal-eval-1b'" in subset.output
    assert "set arc.subset=null to take every task" in subset.output
    assert not run_dir.exists()


def test_no_progress_silences_the_libraries_bars_too(monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers.utils.logging as hf_logging
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    hf_logging.enable_progress_bar()
    enable_progress_bars()
    try:
        silence_library_progress_bars()
        assert not hf_logging.is_progress_bar_enabled() and are_progress_bars_disabled()
        assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"  # for the libraries a worker imports later
    finally:
        os.environ.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
        hf_logging.enable_progress_bar()
        enable_progress_bars()


def test_config_show_prints_the_run_hash_a_run_records(tmp_path: Path) -> None:
    sets = ["--set", "selftest.units=2", "--set", "selftest.iterations=10"]
    shown = _invoke("config", "show", "selftest", *sets)
    assert shown.exit_code == 0, shown.output
    run_hash = next(line for line in shown.output.splitlines() if line.startswith("# run hash")).split()[-1]
    assert _invoke("selftest", "--run-dir", str(tmp_path / "r"), "--no-progress", *sets).exit_code == 0
    assert json.loads((tmp_path / "r" / "manifest.json").read_text())["config_hash"] == run_hash
