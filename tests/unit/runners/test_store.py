"""Journal durability, torn lines, manifests, refused resumes and atomic artifacts."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from runners.provenance import REDACTED
from runners.store import RunStore, RunStoreError, UnitRecord


def _record(unit: str, status: str = "ok", value: int = 0) -> UnitRecord:
    return UnitRecord(unit=unit, status=status, reason=None, result={"v": value}, seconds=0.01)  # type: ignore[arg-type]


def test_torn_last_line_is_ignored_with_a_warning_and_healed(tmp_path: Path, caplog) -> None:
    store = RunStore.open(tmp_path)
    journal = store.journal("s")
    journal.append(_record("a", value=1))
    journal.append(_record("b", value=2))
    store.close()
    path = tmp_path / "stages" / "s" / "journal.jsonl"
    with open(path, "ab") as fh:
        fh.write(b'{"unit":"c","status":"ok","res')  # a crash mid-write
    with caplog.at_level(logging.WARNING):
        reopened = RunStore.open(tmp_path)
        assert set(reopened.records("s")) == {"a", "b"}
        reopened.journal("s").append(_record("c", value=3))  # must not glue onto the torn fragment
    assert "torn" in caplog.text
    fresh = RunStore.open(tmp_path)
    records = fresh.records("s")
    assert set(records) == {"a", "b", "c"} and records["c"].result == {"v": 3}


def test_error_units_are_not_done_and_last_line_wins(tmp_path: Path) -> None:
    journal = RunStore.open(tmp_path).journal("s")
    journal.append(_record("a", status="error"))
    journal.append(_record("b", status="invalid"))
    assert journal.done_units() == {"b"}
    journal.append(_record("a", status="ok", value=9))
    assert RunStore.open(tmp_path).journal("s").done_units() == {"a", "b"}


def test_journals_of_other_chunks_merge_by_unit_id(tmp_path: Path) -> None:
    RunStore.open(tmp_path).journal("s").append(_record("a"))
    other = tmp_path / "stages" / "s" / "journal-colab1.jsonl"
    other.write_text(json.dumps({"unit": "b", "status": "ok", "result": 1}) + "\n")
    assert RunStore.open(tmp_path).journal("s").done_units() == {"a", "b"}


def test_resume_with_changed_config_is_refused_with_the_changed_keys(tmp_path: Path) -> None:
    store = RunStore.open(tmp_path)
    store.start({"train": {"epochs": 2, "lr": 1}}, "hash-a")
    store.start({"train": {"epochs": 2, "lr": 1}}, "hash-a")  # same config: fine
    with pytest.raises(RunStoreError) as err:
        store.start({"train": {"epochs": 3, "lr": 1}}, "hash-b")
    assert "train.epochs: 2 → 3" in str(err.value) and "--allow-config-change" in str(err.value)
    store.start({"train": {"epochs": 3, "lr": 1}}, "hash-b", allow_config_change=True)
    sessions = (tmp_path / "sessions.jsonl").read_text().splitlines()
    assert [json.loads(s)["config_hash"] for s in sessions] == ["hash-a", "hash-a", "hash-b"]


def test_manifest_has_provenance_and_no_secrets(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijklmnopqrstuvwxyz123456")
    monkeypatch.setenv("SEAL_API_KEY", "plain-secret-value")
    monkeypatch.setenv("SEAL_NOTE", "uses sk-abcdefghijklmnopqrstuvwxyz inline")
    manifest = RunStore.open(tmp_path).start({"a": 1}, "h")
    text = (tmp_path / "manifest.json").read_text()
    assert "hf_abcdefghij" not in text and "plain-secret-value" not in text and "sk-abcdefghij" not in text
    assert manifest["env"]["HF_TOKEN"] == REDACTED and manifest["env"]["SEAL_API_KEY"] == REDACTED
    for key in ("config", "config_hash", "code", "packages", "platform", "argv", "started_at"):
        assert key in manifest
    assert manifest["packages"]["pyyaml"]


def test_artifact_appears_only_when_complete(tmp_path: Path) -> None:
    store = RunStore.open(tmp_path)
    with pytest.raises(RuntimeError), store.write_artifact("s", "u1") as tmp:
        (tmp / "adapter.bin").write_bytes(b"half")
        raise RuntimeError("crash while saving")
    assert not store.artifact_path("s", "u1").exists()
    assert list((tmp_path / "artifacts" / "s").iterdir()) == []  # the partial folder is gone
    with store.write_artifact("s", "u1") as tmp:
        assert not store.artifact_path("s", "u1").exists()
        (tmp / "adapter.bin").write_bytes(b"whole")
    assert (store.artifact_path("s", "u1") / "adapter.bin").read_bytes() == b"whole"


def test_url_run_directory_round_trips_through_a_mirror(tmp_path: Path, monkeypatch) -> None:
    """fsspec's in-memory filesystem stands in for a bucket (no object store can run here)."""
    monkeypatch.setenv("SEAL_CACHE", str(tmp_path / "cache-a"))
    store = RunStore.open("memory://bucket/run")
    store.start({"a": 1}, "h")
    store.journal("s").append(_record("u1"))
    with store.write_artifact("s", "u1") as tmp:
        (tmp / "w.txt").write_text("x")
    store.sync()
    store.close()  # waits for the background push
    monkeypatch.setenv("SEAL_CACHE", str(tmp_path / "cache-b"))  # another machine
    other = RunStore.open("memory://bucket/run")
    assert other.read_manifest()["config_hash"] == "h"
    assert other.journal("s").done_units() == {"u1"}
    assert not (other.root / "artifacts" / "s" / "u1").exists()  # artifacts come on demand
    assert (other.artifact("artifacts/s/u1") / "w.txt").read_text() == "x"
    other.journal("s").append(_record("u2"))
    other.sync()
    other.close()
    monkeypatch.setenv("SEAL_CACHE", str(tmp_path / "cache-c"))
    assert RunStore.open("memory://bucket/run").journal("s").done_units() == {"u1", "u2"}


def test_manifest_on_a_mount_without_hard_links(tmp_path: Path, monkeypatch) -> None:
    """Google Drive on Colab refuses os.link; the manifest must still be created once, and resumes still checked.
    (os.link is made to fail: no such mount exists on CI machines.)"""

    def no_links(*_args, **_kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr("os.link", no_links)
    store = RunStore.open(tmp_path)
    store.start({"a": 1}, "h1")
    assert json.loads((tmp_path / "manifest.json").read_text())["config_hash"] == "h1"
    store.start({"a": 1}, "h1")
    with pytest.raises(RunStoreError, match="a: 1 → 2"):
        store.start({"a": 2}, "h2")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
