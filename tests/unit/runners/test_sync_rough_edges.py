"""Sync, pull, push, report and export rough edges a held-out review found: the URL remembered although the first
push failed, targets that can never work refused in one line (not "retry"), pushed copies recognised, pull refusing
a foreign folder, `export --out DIR`, and the small wording fixes."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from runners.cli import main
from runners.store import Journal, RunStore, UnitRecord
from runners.sync import recorded_url

ROOT = Path(__file__).resolve().parents[3]
SELFTEST = ["--set", "selftest.units=3", "--set", "selftest.iterations=50", "--no-progress"]


def _invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, list(args))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends: connections are refused


def _seal(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    base.update({
        "OMP_NUM_THREADS": "1", "SEAL_CACHE": str(cwd / "cache"), "PYTHONPATH": str(ROOT),
        "AWS_EC2_METADATA_DISABLED": "true", "AWS_MAX_ATTEMPTS": "1",
        "AWS_SHARED_CREDENTIALS_FILE": str(cwd / "none"), "AWS_CONFIG_FILE": str(cwd / "none"),
    })  # fmt: skip
    return subprocess.run([sys.executable, "-m", "runners.cli", *args], cwd=cwd, env={**base, **env},
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- 1. the URL is remembered when the run starts syncing ------------------------------------------------------


def test_a_run_whose_first_push_fails_remembers_its_url_for_push_and_resume(tmp_path: Path) -> None:
    pytest.importorskip("s3fs")
    down = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{_closed_port()}", "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    url = "s3://bucket/x"
    ran = _seal(["selftest", "--run-dir", "r", "--sync-to", url, "--set", "run.sync_wait_s=2", *SELFTEST],
                tmp_path, **down)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert "are not in s3://bucket/x yet" in ran.stderr and "`seal push r`" in ran.stderr
    assert recorded_url(tmp_path / "r") == url
    pushed = _seal(["push", "r"], tmp_path, **down)  # the advice the warning gave: it tries, and says retry
    assert "never synced" not in pushed.stderr
    assert f"{url}: push failed (EndpointConnectionError" in _one_line(pushed) and "again" in pushed.stderr
    resumed = _seal(["selftest", "--run-dir", "r", "--set", "run.sync_wait_s=2", *SELFTEST], tmp_path, **down)
    assert resumed.returncode == 0, resumed.stderr
    assert "are not in s3://bucket/x yet" in resumed.stderr  # still syncing there, without --sync-to


def test_the_url_is_recorded_at_start_before_any_push(tmp_path: Path) -> None:
    store = RunStore.open(tmp_path / "a", sync_to=str(tmp_path / "drive"))
    assert recorded_url(tmp_path / "a") is None  # opening writes nothing
    store.start({"x": 1}, "h")
    assert recorded_url(tmp_path / "a") == str(tmp_path / "drive")
    assert not (tmp_path / "drive").exists()  # recorded locally; nothing was pushed yet


# -- 3. permanent failures are one line saying what to fix -----------------------------------------------------


def test_a_sync_target_under_a_file_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("mine")
    refused = _seal(["selftest", "--run-dir", "r", "--sync-to", str(tmp_path / "afile" / "sub"), *SELFTEST], tmp_path)
    line = _one_line(refused)
    assert f"{tmp_path / 'afile'} is a file, where a folder is needed" in line and "retried" not in line
    assert not (tmp_path / "r").exists()


def test_pull_from_a_file_or_without_credentials_says_what_to_fix(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("mine")
    from_file = _one_line(_seal(["pull", str(tmp_path / "afile"), "p"], tmp_path))
    assert "is a file, where a folder is needed" in from_file and "run it again" not in from_file
    assert not (tmp_path / "p").exists()
    pytest.importorskip("s3fs")
    no_keys = _one_line(_seal(["pull", "s3://nobucket/x", "p"], tmp_path))
    assert "no credentials" in no_keys and "AWS_ACCESS_KEY_ID" in no_keys and "run it again" not in no_keys
    down = _one_line(_seal(["pull", "s3://bucket/x", "p"], tmp_path, AWS_ENDPOINT_URL=f"http://127.0.0.1:"
                           f"{_closed_port()}", AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s"))  # fmt: skip
    assert "run it again to continue" in down  # a server that is down is worth retrying


def test_permanent_failures_are_told_from_transient_ones(tmp_path: Path) -> None:
    from runners.sync import permanent_failure

    (tmp_path / "afile").write_text("x")
    missing_bucket = FileNotFoundError("The specified bucket does not exist")
    assert "bucket does not exist" in (permanent_failure(missing_bucket) or "")
    assert "permission denied" in (permanent_failure(PermissionError("Access Denied")) or "")
    under_file = NotADirectoryError(20, "Not a directory", str(tmp_path / "afile" / "sub" / "manifest.json"))
    assert permanent_failure(under_file) == f"{tmp_path / 'afile'} is a file, where a folder is needed: name a " \
                                            "folder (or a URL)"  # fmt: skip
    assert permanent_failure(ConnectionError("refused")) is None
    assert permanent_failure(TimeoutError()) is None


def test_a_push_that_cannot_work_stops_retrying_and_says_what_to_fix(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = RunStore.open(tmp_path / "a", sync_to=str(tmp_path / "drive"))
    store.start({"x": 1}, "h")
    (tmp_path / "drive").write_text("a file appeared where the folder was")
    store.sync()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        store.close(30)
    assert time.monotonic() - started < 10  # not retried until the timeout
    assert store.remote is not None and store.remote.permanent
    assert "fix that, then `seal push" in caplog.text and "run the same command again" not in caplog.text


# -- 4. a pushed copy is recognised -----------------------------------------------------------------------------


def test_report_export_and_run_on_a_pushed_copy_say_pull_it_first(tmp_path: Path) -> None:
    drive = tmp_path / "remote" / "kd"
    ran = _invoke("selftest", "--run-dir", str(tmp_path / "t1"), "--sync-to", str(drive), *SELFTEST)
    assert ran.exit_code == 0, ran.output
    for args in (["report", str(drive)], ["export", str(drive)], ["selftest", "--run-dir", str(drive), *SELFTEST]):
        result = _invoke(*args)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert f"{drive} is a pushed copy of a run" in result.output and f"`seal pull {drive} DIR`" in result.output
    assert not (drive / "report").exists()


# -- 5. pull refuses a folder that is not a run -----------------------------------------------------------------


def test_pull_refuses_a_folder_that_holds_something_else_and_takes_an_empty_one(tmp_path: Path) -> None:
    drive = tmp_path / "remote"
    assert _invoke("selftest", "--run-dir", str(tmp_path / "t1"), "--sync-to", str(drive), *SELFTEST).exit_code == 0
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    refused = _invoke("pull", str(drive), str(junk))
    assert refused.exit_code == 1 and "is not empty and holds no run" in refused.output
    assert sorted(p.name for p in junk.iterdir()) == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    pulled = _invoke("pull", str(drive), str(empty))
    assert pulled.exit_code == 0, pulled.output
    assert "1 file, 3 journal lines (1 stage), 0 artifacts" in pulled.output  # pluralized (7)


# -- 2. export --out an existing directory ----------------------------------------------------------------------


def test_export_into_an_existing_directory_writes_the_default_name_inside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runners.pipelines import selftest

    item = {"item_id": "t1", "kind": "arc", "question": "t1", "task_id": "t1", "gold": [[[1]]],
            "attempts": [[[1]]], "provenance": {"unit_id": "t1"}}  # fmt: skip
    monkeypatch.setattr(selftest, "export_items", lambda cfg, store: [dict(item)], raising=False)
    run_dir = tmp_path / "run"
    assert _invoke("selftest", "--run-dir", str(run_dir), *SELFTEST).exit_code == 0
    out = tmp_path / "emptydir"
    out.mkdir()
    result = _invoke("export", str(run_dir), "--out", str(out))
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    lines = (out / "bundle.jsonl").read_text().splitlines()
    assert json.loads(lines[1])["item_id"] == "t1"
    assert "an existing directory gets DIR/bundle.jsonl" in _invoke("export", "--help").output


# -- 6. wording per command ---------------------------------------------------------------------------------------


def test_report_and_export_of_a_file_do_not_suggest_a_new_folder(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine")
    for command in ("report", "export"):
        result = _invoke(command, str(afile))
        assert result.exit_code == 1 and f"{afile} is a file, not a run directory" in result.output
        assert "a new one" not in result.output and "a run to resume" not in result.output


# -- 7. small things ----------------------------------------------------------------------------------------------


def test_a_report_without_plots_says_so(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert _invoke("selftest", "--run-dir", str(run_dir), *SELFTEST).exit_code == 0
    result = _invoke("report", str(run_dir))
    assert result.exit_code == 0, result.output
    assert "0 figures" not in result.output and "(no figures" in result.output


def test_the_report_markdown_leaves_out_the_summary_s_terminal_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runners.pipelines import selftest

    run_dir = tmp_path / "run"
    assert _invoke("selftest", "--run-dir", str(run_dir), *SELFTEST).exit_code == 0
    monkeypatch.setattr(selftest, "summarize", lambda cfg, store: f"the table\nreport: {store.root}/report/x.md")
    assert _invoke("report", str(run_dir)).exit_code == 0
    markdown = (run_dir / "report" / "report.md").read_text()
    assert "the table" in markdown and "report: " not in markdown


def test_a_torn_journal_line_is_warned_about_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    stage = tmp_path / "stage"
    journal = Journal(stage)
    journal.append(UnitRecord(unit="u1", status="ok", reason=None, result={}, seconds=0.0, t=time.time()))
    journal.close()
    with open(stage / "journal.jsonl", "ab") as fh:
        fh.write(b'{"unit":"u2","status":"ok","res')  # killed mid-write
    resumed = Journal(stage)
    with caplog.at_level(logging.WARNING):
        resumed.refresh()
        resumed.append(UnitRecord(unit="u3", status="ok", reason=None, result={}, seconds=0.0, t=time.time()))
        assert set(resumed.records()) == {"u1", "u3"}
        assert set(Journal(stage).records()) == {"u1", "u3"}  # another reader in this process: no second warning
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1, caplog.text


def test_the_memory_plot_labels_a_process_not_a_file_name() -> None:
    from runners.run_report import _process_label

    lines = [{"stage": "it0.inner"}, {"stage": "it0.inner"}, {"stage": "it1.inner"}]
    assert _process_label("memory-327.jsonl", lines) == "process 327 (it0.inner, it1.inner)"
    assert _process_label("memory-9.jsonl", [{}]) == "process 9"
