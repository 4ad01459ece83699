"""runners/sync.py against a folder target (a mounted drive such as Colab's Google Drive is a folder): segments,
commits, the ledger, pulls, and the one-line errors. The S3 server tests are in tests/e2e/test_s3_sync.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runners.store import RunStore, RunStoreError, UnitRecord
from runners.sync import RunSync


def _record(unit: str) -> UnitRecord:
    return UnitRecord(unit=unit, status="ok", reason=None, result={"u": unit}, seconds=0.0, t=time.time())


def _run(tmp_path: Path, name: str, target: Path) -> RunStore:
    store = RunStore.open(tmp_path / name, sync_to=str(target))
    assert store.remote is not None
    return store


def test_a_folder_target_round_trips_journals_and_artifacts(tmp_path: Path) -> None:
    drive = tmp_path / "drive" / "run"
    a = _run(tmp_path, "a", drive)
    a.start({"x": 1}, "h")
    for unit in ("u1", "u2"):
        with a.write_artifact("s", unit) as folder:
            (folder / "w.txt").write_text(unit)
        a.journal("s").append(_record(unit))
    (tmp_path / "a" / "stages" / "s" / "units.json").write_text('["u1", "u2", "u3"]')  # a frozen unit list
    (tmp_path / "a" / "logs").mkdir()
    (tmp_path / "a" / "logs" / "worker-1.log").write_text("log")
    (tmp_path / "a" / "work" / "s" / "u3").mkdir(parents=True)
    (tmp_path / "a" / "work" / "s" / "u3" / "ckpt.bin").write_text("scratch")
    assert a.remote.push().uploaded  # type: ignore[union-attr]
    store_id = a.remote.store_id  # type: ignore[union-attr]
    assert (drive / "stores" / store_id / "logs" / "worker-1.log").read_text() == "log"  # per machine
    assert (drive / "stores" / store_id / "sessions.jsonl").exists()
    assert not (drive / "work").exists() and not (drive / "stages" / "s" / "journal.jsonl").exists()
    assert a.remote.push().uploaded == []  # type: ignore[union-attr]  # nothing changed, nothing sent
    commit = json.loads((drive / "artifacts/s/u1/commit.json").read_text())
    assert (drive / "artifacts/s/u1" / commit["attempt"] / "w.txt").read_text() == "u1"
    assert not list(drive.rglob(".*.tmp"))  # a folder target gets whole files by rename

    b = _run(tmp_path, "b", drive)
    assert b.read_manifest()["config_hash"] == "h"  # type: ignore[index]
    assert b.journal("s").done_units() == {"u1", "u2"}
    assert (tmp_path / "b" / "stages" / "s" / "units.json").read_text() == '["u1", "u2", "u3"]'
    assert not (tmp_path / "b" / "logs").exists()
    assert (b.artifact("artifacts/s/u2") / "w.txt").read_text() == "u2"
    b.journal("s").append(_record("u3"))
    b.remote.push()  # type: ignore[union-attr]
    assert "artifacts/s/u2" not in b.remote.pending()  # type: ignore[union-attr]  # pulled, so never pushed back

    a2 = _run(tmp_path, "a", drive)  # the first machine again: sees the second's unit
    assert a2.journal("s").done_units() == {"u1", "u2", "u3"}


def test_a_torn_journal_line_waits_and_segments_rebuild_in_order(tmp_path: Path) -> None:
    drive = tmp_path / "drive"
    a = _run(tmp_path, "a", drive)
    a.start({"x": 1}, "h")
    a.journal("s").append(_record("u1"))
    journal = tmp_path / "a" / "stages" / "s" / "journal.jsonl"
    with open(journal, "ab") as fh:
        fh.write(b'{"unit":"u2","status":"ok"')  # a line being written
    a.remote.push()  # type: ignore[union-attr]
    segments = sorted((drive / "stages" / "s" / "journal").rglob("*.jsonl"))
    assert len(segments) == 1 and segments[0].read_bytes().endswith(b"\n")
    with open(journal, "ab") as fh:
        fh.write(b"\n")
    a.journal("s").append(_record("u3"))
    a.remote.push()  # type: ignore[union-attr]
    segments = sorted((drive / "stages" / "s" / "journal").rglob("*.jsonl"))
    assert len(segments) == 2

    # Two pushers of one journal may send overlapping ranges; a missing range holds back what follows it.
    link = RunSync(tmp_path / "reader", str(drive))
    group = segments[0].parent.name
    first, second = segments
    end = int(second.stem.split("-")[1])
    overlap = second.parent / f"{0:012d}-{end:012d}.jsonl"
    overlap.write_bytes(journal.read_bytes()[:end])
    link.pull()
    rebuilt = tmp_path / "reader" / "stages" / "s" / f"journal@{group}.jsonl"
    assert rebuilt.read_bytes() == journal.read_bytes()[:end]
    first.unlink()
    overlap.unlink()
    gap = RunSync(tmp_path / "reader2", str(drive))
    gap.pull()
    assert not (tmp_path / "reader2" / "stages" / "s" / f"journal@{group}.jsonl").exists()


def test_an_upload_without_its_commit_is_invisible(tmp_path: Path) -> None:
    drive = tmp_path / "drive"
    a = _run(tmp_path, "a", drive)
    a.start({"x": 1}, "h")
    orphan = drive / "artifacts" / "s" / "u1" / "attempt-zzz-1"
    orphan.mkdir(parents=True)
    (orphan / "w.txt").write_text("half")
    b = _run(tmp_path, "b", drive)
    assert not b.artifact("artifacts/s/u1").exists()
    assert b.remote.pull(artifacts=True).artifacts == []  # type: ignore[union-attr]


def test_another_url_than_the_recorded_one_is_refused(tmp_path: Path) -> None:
    a = _run(tmp_path, "a", tmp_path / "one")
    a.start({"x": 1}, "h")
    a.remote.push()  # type: ignore[union-attr]
    with pytest.raises(RunStoreError, match="syncs to .*one.*delete .*\\.sync"):
        RunStore.open(tmp_path / "a", sync_to=str(tmp_path / "two"))


def _seal(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runners.cli", *args], cwd=cwd, capture_output=True, text=True)


def test_a_missing_fsspec_backend_is_one_line_with_the_install_command(tmp_path: Path) -> None:
    pytest.importorskip("fsspec")
    try:
        import gcsfs  # noqa: F401

        pytest.skip("gcsfs is installed here")
    except ImportError:
        pass
    result = _seal("selftest", "--run-dir", "r", "--sync-to", "gs://bucket/run", cwd=tmp_path)
    assert result.returncode != 0
    assert "gs:// needs gcsfs" in result.stderr and "pip install gcsfs" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_pull_and_push_commands(tmp_path: Path) -> None:
    drive = tmp_path / "drive"
    sets = ["--set", "selftest.units=6", "--set", "selftest.iterations=10", "--set", "selftest.artifact_kib=1"]
    made = _seal("selftest", "--run-dir", "a", "--sync-to", str(drive), *sets, "--no-progress", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    pulled = _seal("pull", str(drive), "b", cwd=tmp_path)
    assert pulled.returncode == 0, pulled.stderr
    assert "6 journal lines" in pulled.stdout and "resume with: seal selftest" in pulled.stdout
    assert "--run-dir b" in pulled.stdout and str(drive) not in pulled.stdout.split("resume with:")[1]
    wrong = _seal("pull", str(drive), "a", cwd=tmp_path)  # same run: fine
    assert wrong.returncode == 0, wrong.stderr
    other = tmp_path / "other"
    _seal("selftest", "--run-dir", "o", "--sync-to", str(other), "--set", "selftest.units=2", cwd=tmp_path)
    refused = _seal("pull", str(other), "a", cwd=tmp_path)
    assert refused.returncode != 0 and "syncs to" in refused.stderr
    (tmp_path / "a" / "report").mkdir()
    (tmp_path / "a" / "report" / "note.md").write_text("hi")
    pushed = _seal("push", "a", cwd=tmp_path)
    assert pushed.returncode == 0, pushed.stderr
    assert (drive / "report" / "note.md").read_text() == "hi"
    elsewhere = _seal("push", "a", "--to", str(other), cwd=tmp_path)
    assert elsewhere.returncode != 0 and f"syncs to {drive}, not {other}" in elsewhere.stderr
    assert "leave out --to" in elsewhere.stderr and "pull into" not in elsewhere.stderr
    never = _seal("push", "o2", cwd=tmp_path)
    assert never.returncode != 0 and "Traceback" not in never.stderr


def test_a_synced_run_killed_with_sigkill_resumes_and_the_copy_is_whole(tmp_path: Path) -> None:
    """A real process, SIGKILLed mid-run while it pushes to a folder target; the rerun finishes both the units and
    the pushes, and a pull elsewhere sees every unit exactly once."""
    import os
    import signal

    drive = tmp_path / "drive"
    sets = ["--set", "selftest.units=30", "--set", "selftest.iterations=60000", "--set", "selftest.artifact_kib=4"]
    command = [sys.executable, "-m", "runners.cli", "selftest", "--run-dir", "a", "--sync-to", str(drive), *sets,
               "--no-progress"]  # fmt: skip
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = tmp_path / "a" / "stages" / "hash" / "journal.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not journal.exists() or journal.read_bytes().count(b"\n") < 5):
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = journal.read_bytes().count(b"\n")
    assert 5 <= killed_at < 30, "the kill should land mid-run"
    finished = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    pulled = RunStore.open(tmp_path / "b", sync_to=str(drive))
    records = pulled.records("hash")
    assert set(records) == {f"u{i:05d}" for i in range(30)}
    lines = [json.loads(x) for x in (tmp_path / "b" / "stages" / "hash").glob("journal@*.jsonl").__next__()
             .read_text().splitlines()]  # fmt: skip
    assert len(lines) == len({line["unit"] for line in lines}) == 30  # no unit pushed twice, none missing
    original = {r.unit: r.result for r in RunStore.open(tmp_path / "a").records("hash").values()}
    assert {u: r.result for u, r in records.items()} == original
    assert pulled.remote.pull(artifacts=True) is not None  # type: ignore[union-attr]
    assert len(list((tmp_path / "b" / "artifacts" / "hash").iterdir())) == 30
