"""Journal merge precedence across files, per-line artifacts and config hash, work folders, data identity, and a
run directory that is only created by its first write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runners.store import RunStore, RunStoreError, UnitRecord


def _line(unit: str, status: str, t: float, value: int) -> str:
    return json.dumps({"unit": unit, "status": status, "t": t, "result": {"v": value}, "end": True}) + "\n"


@pytest.mark.parametrize("order", ["ok-file-first", "error-file-first"])
def test_recorded_ok_never_reverts_to_error_from_another_file_in_either_order(tmp_path: Path, order: str) -> None:
    stage = tmp_path / "stages" / "s"
    stage.mkdir(parents=True)
    ok = _line("a", "ok", 100.0, 1) + _line("b", "ok", 100.0, 1)
    error = _line("a", "error", 200.0, 2) + _line("b", "invalid", 300.0, 3)  # later `t` in both cases
    first, second = (ok, error) if order == "ok-file-first" else (error, ok)
    (stage / "journal-1.jsonl").write_text(first)  # files are read in name order
    (stage / "journal-2.jsonl").write_text(second)
    records = RunStore.open(tmp_path).records("s")
    assert records["a"].status == "ok" and records["a"].result == {"v": 1}  # error never wins
    assert records["b"].status == "invalid" and records["b"].result == {"v": 3}  # later done line wins


def test_later_done_line_wins_by_t_not_by_file_order(tmp_path: Path) -> None:
    stage = tmp_path / "stages" / "s"
    stage.mkdir(parents=True)
    (stage / "journal-1.jsonl").write_text(_line("a", "ok", 500.0, 1))
    (stage / "journal-2.jsonl").write_text(_line("a", "ok", 400.0, 2))  # read last, written earlier
    assert RunStore.open(tmp_path).records("s")["a"].result == {"v": 1}


def test_error_appended_after_ok_in_the_same_journal_does_not_undo_it(tmp_path: Path) -> None:
    journal = RunStore.open(tmp_path).journal("s")
    journal.append(UnitRecord("a", "ok", None, 1, 0.1))
    journal.append(UnitRecord("a", "error", "boom", None, 0.1))
    assert journal.done_units() == {"a"}
    assert RunStore.open(tmp_path).records("s")["a"].status == "ok"


def test_artifacts_and_config_hash_round_trip_through_the_journal(tmp_path: Path) -> None:
    artifacts = {"adapter": "artifacts/s/a/adapter"}
    record = UnitRecord("a", "ok", None, {"x": 1}, 0.5, artifacts=artifacts, config_hash="h1")
    RunStore.open(tmp_path).journal("s").append(record)
    raw = json.loads((tmp_path / "stages" / "s" / "journal.jsonl").read_text())
    assert raw["artifacts"] == {"adapter": "artifacts/s/a/adapter"} and raw["config_hash"] == "h1" and raw["t"] > 0
    back = RunStore.open(tmp_path).records("s")["a"]
    assert back.artifacts == {"adapter": "artifacts/s/a/adapter"} and back.config_hash == "h1"


def test_open_creates_nothing_until_the_first_write(tmp_path: Path) -> None:
    root = tmp_path / "run"
    store = RunStore.open(root)
    assert store.read_manifest() is None and not root.exists()
    store.start({"a": 1}, "h")
    assert (root / "manifest.json").exists()


def test_work_dir_is_created_on_demand_and_swept_for_recorded_units(tmp_path: Path) -> None:
    store = RunStore.open(tmp_path)
    folder = store.work_dir("s", "a")
    assert folder == tmp_path / "work" / "s" / "a" and folder.is_dir()
    store.work_dir("s", "b")
    store.sweep_work("s", {"a"})
    assert not folder.exists() and (tmp_path / "work" / "s" / "b").is_dir()


def test_changed_data_identity_is_refused_listing_the_data_unless_allowed(tmp_path: Path) -> None:
    store = RunStore.open(tmp_path)
    store.start({"a": 1}, "h", data_identity={"arc/t1": "aaa", "arc/t2": "bbb"})
    store.start({"a": 1}, "h", data_identity={"arc/t1": "aaa", "arc/t2": "bbb"})  # same data: resumes
    with pytest.raises(RunStoreError) as err:
        store.start({"a": 1}, "h", data_identity={"arc/t1": "aaa", "arc/t2": "ccc"})
    assert "arc/t2: content changed" in str(err.value) and "arc/t1" not in str(err.value)
    store.start({"a": 1}, "h", data_identity={"arc/t1": "aaa", "arc/t2": "ccc"}, allow_config_change=True)
    last = json.loads((tmp_path / "sessions.jsonl").read_text().splitlines()[-1])
    assert last["allowed_changes"] == ["data arc/t2: content changed (bbb → ccc)"]


def test_an_identity_rule_decides_whether_a_differing_hash_resumes(tmp_path: Path) -> None:
    store = RunStore.open(tmp_path)
    store.start({"a": 1, "b": 1}, "h1")
    store.start({"a": 1, "b": 2}, "h2", config_changes=lambda stored: [])  # the rule finds nothing that matters
    with pytest.raises(RunStoreError, match="a: 1 → 5"):
        store.start({"a": 5}, "h3", config_changes=lambda stored: [f"a: {stored['a']} → 5"])
